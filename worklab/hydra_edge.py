"""Where Hydra meets worklab: the schemas in its ConfigStore, the resolvers conf/ names, plain configs out.

The schemas (worklab.config) are plain dataclasses that know nothing of Hydra. This
module registers them in Hydra's ConfigStore (base_config, and schema/schedule/NAME for
each schedule of the registry) and registers the OmegaConf resolvers that
conf/config.yaml uses to name run, sweep and job folders, all when it is imported:
command.py and run.py import it before Hydra composes anything, and so does every test
that composes conf/. `to_plain` turns a composed DictConfig into the plain dataclasses
the package works with, refusing keys no schema defines; `with_value` sets one key of a
plain config as an override would (schedule=hyper's values). No TensorFlow.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import fields, is_dataclass
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from worklab.compat import omegaconf_child, omegaconf_is_set
from worklab.config.root import Config
from worklab.config.schedules import SCHEDULES
from worklab.errors import UserError

MAX_FOLDER_NAME = 200  # file systems allow 255 bytes


def register() -> None:
    """Store the schemas so conf/ files are checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for kind in SCHEDULES:
        cs.store(group="schema/schedule", name=kind.name, node=kind.schema)


def to_plain(cfg: Any) -> Config:
    """Turn a composed DictConfig into the plain dataclasses the package works with.

    Hydra lets `+key=value` add a key the schema does not have (its own error message
    suggests the `+`); such a key would be carried along and never read, so it is refused.
    """
    unknown = _unknown_keys(cfg)
    if unknown:
        raise UserError(f"{', '.join(unknown)}: no such config key. `python run.py --cfg job` shows every key; "
                        "`+` cannot add keys worklab does not read.")
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as error:
        raise UserError(f"{error.full_key} has no value: pass {error.full_key}=...") from None


def _unknown_keys(node: Any, prefix: str = "") -> List[str]:
    """Keys of a composed config that its schema (the dataclass behind each node) does not define."""
    if OmegaConf.is_list(node):
        return [k for i, child in enumerate(node) if OmegaConf.is_config(child)
                for k in _unknown_keys(child, f"{prefix}[{i}].")]
    schema = OmegaConf.get_type(node)
    known = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    unknown = []
    for key in node:
        if known is not None and key not in known:
            unknown.append(f"{prefix}{key}")
            continue
        child = omegaconf_child(node, key)
        if OmegaConf.is_config(child) and omegaconf_is_set(child):
            unknown += _unknown_keys(child, f"{prefix}{key}.")
    return unknown


def with_value(cfg: Config, key: str, value: Any) -> Config:
    """A copy of `cfg` with `key` (a dotted path such as network.width) set to `value`, checked like an override."""
    node = OmegaConf.structured(cfg)
    if key not in _leaf_keys(node):
        raise UserError(f"schedule.param={key} is not a config key; keys look like network.width, "
                        "network.depth, optimizer.lr, reader.batch_size.")
    try:
        OmegaConf.update(node, key, value, merge=False)
    except Exception as error:  # OmegaConf's validation errors name the key and the type
        raise UserError(f"schedule.values: {key}={value!r} is not accepted: {str(error).splitlines()[0]}.") from None
    return OmegaConf.to_object(node)


def _leaf_keys(node: Any, prefix: str = "") -> List[str]:
    keys = []
    for key in node:
        child = omegaconf_child(node, key)
        path = f"{prefix}{key}"
        keys += _leaf_keys(child, path + ".") if OmegaConf.is_dict(child) else [path]
    return keys


def _run_folder(resume: Optional[str], run_name: Optional[str], fresh: str) -> str:
    """The resumed run's folder, outputs/<run_name>, or a new dated folder."""
    return resume or (f"outputs/{run_name}" if run_name else fresh)


def _sweep_folder(sweep: Optional[str], fresh: str) -> str:
    return f"multirun/{sweep}" if sweep else fresh


def _job_folder(sweep: Optional[str], number: int, overrides: str) -> str:
    """A named sweep's jobs are named by their overrides, so a relaunch finds its own folders again.

    Slashes in values become '%'; a name too long for a file system keeps its start and
    ends with a hash of the whole, which stays the same for the same overrides.
    """
    if not sweep:
        return str(number)
    name = (overrides or "defaults").replace("/", "%")
    if len(name) <= MAX_FOLDER_NAME:
        return name
    return f"{name[:MAX_FOLDER_NAME - 13]}..{hashlib.sha1(name.encode()).hexdigest()[:11]}"


def _threads_per_job() -> int:
    """TensorFlow threads for one job: all cores alone (0), cores / n_jobs under a parallel launcher."""
    try:
        jobs = HydraConfig.get().launcher.get("n_jobs")
    except ValueError:  # no Hydra run around (tests, the API)
        return 0
    cores = os.cpu_count() or 1
    if not jobs:
        return 0
    return max(1, cores // (cores if jobs < 0 else jobs))


OmegaConf.register_new_resolver("run_folder", _run_folder, replace=True)
OmegaConf.register_new_resolver("threads_per_job", _threads_per_job, replace=True)
OmegaConf.register_new_resolver("sweep_folder", _sweep_folder, replace=True)
OmegaConf.register_new_resolver("job_folder", _job_folder, replace=True)
register()
