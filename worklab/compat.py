"""Every use worklab makes of a private Keras, TensorFlow or OmegaConf API, one named shim each.

pyproject.toml pins the versions these were written against (TESTED). Another version
installed by hand is warned about once, when this module is imported; a shim whose
private name is gone raises a RuntimeError naming the shim, the name and the versions,
at the shim, not in the middle of a training or an export. tests/test_compat.py checks
each shim's outcome, so an upgrade is tried there first.

Importing this module is cheap: Keras and TensorFlow are imported inside the shims that
need them (command.py's modules run before Hydra and never import TensorFlow).

bench/ and the tests are outside worklab and may use private APIs of their own.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional

log = logging.getLogger(__name__)

TESTED = {"keras": "3.15", "tensorflow": "2.21", "omegaconf": "2.3"}  # major.minor, as pinned in pyproject.toml
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos")}


def installed_versions() -> Dict[str, Optional[str]]:
    """The installed version of each package of TESTED (None when not installed), read without importing it."""
    found: Dict[str, Optional[str]] = {}
    for package in TESTED:
        found[package] = None
        for distribution in _DISTRIBUTIONS.get(package, (package,)):
            try:
                found[package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


def version_mismatches(found: Optional[Dict[str, Optional[str]]] = None) -> List[str]:
    """One line per installed package whose major.minor is not the tested one."""
    found = installed_versions() if found is None else found
    return [f"{package} {version} is installed, worklab is tested with {package} {TESTED[package]}.x"
            for package, version in found.items()
            if version is not None and package in TESTED
            and ".".join(version.split(".")[:2]) != TESTED[package]]


def _warn_versions() -> None:
    mismatches = version_mismatches()
    if mismatches:
        log.warning("%s: worklab uses private APIs of these packages (worklab/compat.py); if one fails it raises "
                    "a RuntimeError naming it. pip install -e . installs the tested versions.", "; ".join(mismatches))


_warn_versions()  # once per process, at the first import


def _broken(shim: str, private: str, package: str, why: str = "is missing") -> RuntimeError:
    found = installed_versions().get(package) or "(version unknown)"
    return RuntimeError(f"worklab.compat.{shim}: {private} {why} in {package} {found}; worklab is tested with "
                        f"{package} {TESTED[package]}.x. Install {package}=={TESTED[package]}.* (pyproject.toml "
                        f"pins it) or update {shim} in worklab/compat.py.")


def _require(owner: Any, name: str, shim: str, private: str, package: str) -> Any:
    """owner.name, or the RuntimeError naming the shim when this version lacks it."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise _broken(shim, private, package) from None


def _module(path: str, shim: str, package: str) -> Any:
    try:
        return importlib.import_module(path)
    except ImportError:
        raise _broken(shim, f"module {path}", package) from None


def snake_case_name(class_name: str) -> str:
    """The snake_case name Keras' saving gives a layer of class `class_name` (Conv2D -> conv2d).

    Private: keras.src.utils.naming.to_snake_case. applications.py pairs a Keras 3
    weights file's entries (`layers/conv2d_3`) with a backbone's layers by these names,
    as saving_lib does. If Keras changes the rule, weight files no longer match.
    """
    naming = _module("keras.src.utils.naming", "snake_case_name", "keras")
    return _require(naming, "to_snake_case", "snake_case_name", "keras.src.utils.naming.to_snake_case",
                    "keras")(class_name)


def reset_keras_names() -> None:
    """Restart the per-process counters behind Keras' automatic names (layer_normalization_3 -> _0).

    Private: keras.src.utils.naming.reset_uids. networks.build calls it before every
    build so that a network has the same variable paths, which its checkpoints are keyed
    by, in a fresh process and in a second build (hyper, tests). Without it a second
    build in one process would not find its checkpoint's keys.
    """
    naming = _module("keras.src.utils.naming", "reset_keras_names", "keras")
    _require(naming, "reset_uids", "reset_keras_names", "keras.src.utils.naming.reset_uids", "keras")()


def flatten_layers(model: Any) -> List[Any]:
    """Every layer inside `model`, nested models' and layers' layers included, depth first, `model` excluded.

    Private: keras.layers.Layer._flatten_layers(include_self=False), Keras' own walk
    (Model.layers lists the top level only). batchnorm.batch_norm_layers finds the
    batch-norm layers of nested bodies (a Keras Application, worklab's ResNet blocks)
    with it; without it frozen batch norm, the shared momentum and recalibration break.
    """
    walk = _require(model, "_flatten_layers", "flatten_layers", "keras.layers.Layer._flatten_layers", "keras")
    return walk(include_self=False)


def run_through_graph(model: Any, inputs: Any, intercept: Callable) -> Any:
    """`model`'s functional graph applied to `inputs`, every layer call going to `intercept(original, layer, ...)`.

    Private: keras.Model._run_through_graph(inputs, operation_fn=...) and a process-wide
    swap of keras.layers.Layer.__call__ for the duration (put back in `finally`; no other
    thread may call a layer meanwhile). `original` is the real Layer.__call__. export.py
    rebuilds a network from built-in layers this way (the Keras file of `export`); if
    either changes, that export fails here.
    """
    import keras

    rerun = _require(model, "_run_through_graph", "run_through_graph", "keras.Model._run_through_graph", "keras")
    if "operation_fn" not in inspect.signature(rerun).parameters:
        raise _broken("run_through_graph", "keras.Model._run_through_graph(operation_fn=...)", "keras",
                      "takes no operation_fn")
    original = keras.layers.Layer.__call__

    def call(layer, *args, **kwargs):
        return intercept(original, layer, *args, **kwargs)

    keras.layers.Layer.__call__ = call
    try:
        return rerun(inputs, operation_fn=lambda op: (lambda *a, **k: call(op, *a, **k))
                     if isinstance(op, keras.layers.Layer) else op)
    finally:
        keras.layers.Layer.__call__ = original


def variable_outside_strategy(value: Any, dtype: Any, name: str) -> Any:
    """A non-trainable tf.Variable that the distribution strategy in scope does not make (no mirroring, no broadcast).

    Private: tensorflow.python.ops.resource_variable_ops.ResourceVariable, which the
    strategy's variable creator does not intercept. session.py keeps the schedule's
    JSON state in a string variable: MultiWorkerMirroredStrategy broadcasts each new
    variable's initial value with collective ops, which take numbers only. If it goes,
    a multi-worker session cannot be made.
    """
    ops = _module("tensorflow.python.ops.resource_variable_ops", "variable_outside_strategy", "tensorflow")
    variable = _require(ops, "ResourceVariable", "variable_outside_strategy",
                        "tensorflow.python.ops.resource_variable_ops.ResourceVariable", "tensorflow")
    return variable(value, dtype=dtype, trainable=False, name=name)


TFSM_WEIGHT_HOOK = "_add_existing_weight"


def tfsm_weight_hook(method: str) -> Callable[[type], type]:
    """A class decorator: a keras.layers.TFSMLayer subclass whose `method(weight)` adopts each SavedModel variable.

    Private: TFSMLayer._add_existing_weight, which TFSMLayer.__init__ calls for each
    variable its endpoints use. saved_model.SavedModelLayer tracks the SavedModel's own
    variables under unique, stable paths through it. If the hook is renamed, the class
    fails to define here (saved_model.py is imported only for network=saved_model).
    """
    import keras

    _require(keras.layers.TFSMLayer, TFSM_WEIGHT_HOOK, "tfsm_weight_hook",
             f"keras.layers.TFSMLayer.{TFSM_WEIGHT_HOOK}", "keras")

    def decorate(cls: type) -> type:
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__} has no method {method} for tfsm_weight_hook")
        setattr(cls, TFSM_WEIGHT_HOOK, lambda self, weight: getattr(self, method)(weight))
        return cls

    return decorate


def tfsm_loaded_object(layer: Any) -> Any:
    """What tf.saved_model.load returned for a TFSMLayer (its trainable_variables list, its functions).

    Private: TFSMLayer._reloaded_obj. SavedModelLayer reads which variables the
    SavedModel lists as trainable from it; without it the layer cannot be made.
    """
    return _require(layer, "_reloaded_obj", "tfsm_loaded_object", "keras.layers.TFSMLayer._reloaded_obj", "keras")


def restored_traces(fn: Any) -> List[Any]:
    """The concrete functions (traces) of a function tf.saved_model.load restored; [fn] for a signature.

    Private: RestoredFunction.concrete_functions. saved_model.py picks the trace of a TF
    Hub SavedModel's inference or training call from them; without it the two cannot be
    told apart.
    """
    import tensorflow as tf

    if isinstance(fn, tf.types.experimental.ConcreteFunction):
        return [fn]
    return list(_require(fn, "concrete_functions", "restored_traces", "RestoredFunction.concrete_functions",
                         "tensorflow"))


def restored_argument_names(fn: Any) -> List[str]:
    """The Python argument names of a function tf.saved_model.load restored; [] for a signature (tensors only).

    Private: tf.function's function_spec.fullargspec. saved_model.py finds a TF Hub
    SavedModel's `training` flag, and its position, in them.
    """
    import tensorflow as tf

    if isinstance(fn, tf.types.experimental.ConcreteFunction):
        return []
    spec = _require(fn, "function_spec", "restored_argument_names", "tf.function.function_spec", "tensorflow")
    return list(spec.fullargspec.args)


def track_variable(layer: Any, variable: Any) -> None:
    """Make `layer` own an existing keras.Variable (listed in its weights, saved and restored with it).

    Private: keras.layers.Layer._track_variable. SavedModelLayer tracks the SavedModel's
    variables with it (add_weight would make new ones).
    """
    _require(layer, "_track_variable", "track_variable", "keras.layers.Layer._track_variable", "keras")(variable)


def batch_norm_settings(layer: Any, momentum: Any, synchronized: bool) -> None:
    """Set a built BatchNormalization's momentum (a variable is fine) and `synchronized` after construction.

    Private use of public attributes: BatchNormalization.momentum, which __init__ makes a
    float and call() reads at every step, and .synchronized, read by _moments. batchnorm.py
    points every layer at one momentum variable (warm-up and recalibration change it
    without retracing) and synchronises statistics across replicas. If Keras stops
    reading them at call time, the warm-up and recalibration silently do nothing:
    tests/test_compat.py checks the moving mean follows the variable.
    """
    for name in ("momentum", "synchronized"):
        _require(layer, name, "batch_norm_settings", f"keras.layers.BatchNormalization.{name}", "keras")
    layer.momentum = momentum
    layer.synchronized = synchronized


def omegaconf_child(node: Any, key: Any) -> Any:
    """The child node of a DictConfig, unresolved and without raising on ??? (MISSING).

    Private: omegaconf.DictConfig._get_node. config.py walks composed and saved configs
    with it (unknown keys, leaf keys) where node[key] would resolve interpolations, which
    need Hydra's runtime, or raise on a missing value. Looked up on the class: a DictConfig
    answers any other attribute with its config key of that name.
    """
    get = _require(type(node), "_get_node", "omegaconf_child", "omegaconf.DictConfig._get_node", "omegaconf")
    return get(node, key)


def omegaconf_is_set(node: Any) -> bool:
    """A node that is neither ??? (MISSING) nor None, e.g. an Optional sub-config left at None.

    Private: omegaconf.Node._is_missing and ._is_none (OmegaConf.is_missing needs the parent
    and a key). config.py descends only into set sub-configs.
    """
    missing = _require(type(node), "_is_missing", "omegaconf_is_set", "omegaconf.Node._is_missing", "omegaconf")
    none = _require(type(node), "_is_none", "omegaconf_is_set", "omegaconf.Node._is_none", "omegaconf")
    return not missing(node) and not none(node)
