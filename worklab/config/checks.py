"""The value checks every schema's __post_init__ uses: each refusal is a UserError that names the key.

`inert` refuses a key that would be read but do nothing in the setting at hand (a
momentum with Adam, crop_fraction with resize=squash): set, such keys are refused rather
than ignored.
"""
from __future__ import annotations

import math
import re
from dataclasses import MISSING as MISSING_FIELD, fields
from typing import Any, List, Optional

from worklab.errors import UserError


def require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def positive(key: str, value: float) -> None:
    require(value > 0, f"{key}={value} must be greater than 0.")


def rate(key: str, value: float) -> None:
    require(math.isfinite(value) and value > 0, f"{key}={value} must be a finite number greater than 0.")


def regex(key: str, pattern: Optional[str]) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except re.error as error:
        raise UserError(f"{key}={pattern!r} is not a valid regular expression: {error}.") from None


def inert(section: str, when: str, obj: Any, defaults: Any, keys: List[str]) -> None:
    """Refuse keys that would be read but do nothing in this setting (`when`), naming them."""
    changed = [k for k in keys if getattr(obj, k) != _default(defaults, k)]
    require(not changed, f"{', '.join(f'{section}.{k}={getattr(obj, k)}' for k in changed)} "
                         f"{'has' if len(changed) == 1 else 'have'} no effect with {when}: remove "
                         f"{'it' if len(changed) == 1 else 'them'}.")


def _default(defaults: Any, key: str) -> Any:
    """The default of `key` in a dataclass (class or instance), default_factory fields included."""
    if not isinstance(defaults, type):
        return getattr(defaults, key)
    spec = next(f for f in fields(defaults) if f.name == key)
    return spec.default_factory() if spec.default is MISSING_FIELD else spec.default
