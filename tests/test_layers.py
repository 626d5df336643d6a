"""The package's layers: each module imports its own layer and the ones below, never one above.

Read from the source with `ast` (every import, at module level or inside a function), so
nothing is imported and the test takes well under a second.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

from conftest import ROOT

PACKAGE = ROOT / "worklab"
# Lowest first. A module belongs to the layer of the longest prefix that names it.
LAYERS: List[Tuple[str, ...]] = [
    ("worklab.errors", "worklab.cluster", "worklab.atomic", "worklab.interrupt", "worklab.progress",
     "worklab.native_log", "worklab.compat"),  # compat: the private Keras, TensorFlow, OmegaConf APIs
    ("worklab.config",),  # the schemas, the architecture catalogue, the preprocessing policy
    ("worklab.hydra_edge",),  # Hydra's ConfigStore and resolvers, to_plain, with_value: config only below it
    ("worklab.model", "worklab.data", "worklab.runtime", "worklab.distribute"),
    ("worklab.train", "worklab.serve"),
    ("worklab.run",),
    ("worklab.schedules",),
    ("worklab.app", "worklab.command", "worklab.review"),  # app reaches schedules by name (importlib)
]
MAX_LINES = 500
NO_TENSORFLOW = ("worklab.config", "worklab.hydra_edge")  # checked before TensorFlow may start


def modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def layer(name: str) -> int:
    """The index in LAYERS of the module `name` (-1 if no layer names it)."""
    best, found = -1, ""
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(found):
                best, found = index, prefix
    return best


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(name: str, path: Path) -> Iterator[Tuple[int, str]]:
    """(line, module) for every import in the file; `from a import b` is a.b when b is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base


def test_every_module_has_a_layer():
    assert [name for name, _ in modules() if name != "worklab" and layer(name) < 0] == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target}"
              for name, path in modules() for line, target in imports(name, path)
              if target.startswith("worklab.") and layer(target) > layer(name)]
    assert upward == []


def test_config_and_the_hydra_edge_import_no_tensorflow():
    found = [f"{path.relative_to(ROOT)}:{line} imports {target}"
             for name, path in modules() if layer(name) in {layer(m) for m in NO_TENSORFLOW}
             for line, target in imports(name, path) if target.split(".")[0] in ("tensorflow", "keras")]
    assert found == []


def test_no_module_is_over_max_lines():
    long = {str(path.relative_to(ROOT)): n for _, path in modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
