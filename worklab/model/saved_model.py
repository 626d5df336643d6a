"""network=saved_model: a SavedModel feature extractor on disk, trained as the body of a network.

Image models are often shipped as a SavedModel folder rather than a Keras file: TF Hub's
feature-vector models saved to disk, and what `keras.Model.export` writes. Such a folder
holds functions and variables, not layers, so it is called as one trainable layer
(`keras.layers.TFSMLayer`) whose variables are the SavedModel's own: training moves them,
and worklab's checkpoints save and restore them. worklab.model.networks puts it between the
preprocessing layer and the fresh `head`, with global average pooling when it gives a
feature map [N, h, w, c] rather than a feature vector [N, d].

Conventions:
- Input: [N, S, S, 3] float images, S = reader.image_size, scaled by
  network.preprocessing; the default is `unit` ([0, 1], TF Hub's image convention). A
  SavedModel made by `model.export` from a Keras model that takes another range needs
  that range set (e.g. network.preprocessing=raw for 0-255, tf for [-1, 1]).
- Endpoint (network.endpoint): by default `serve` (what `model.export` writes), else the
  `serving_default` signature, else `__call__` (a TF Hub reusable SavedModel).
- Training endpoint (network.training_endpoint): by default a TF Hub style `__call__`
  traced with `training=True`, when the SavedModel has one (its batch norms then update
  their statistics); else none, and training calls the endpoint itself: a
  `model.export` folder holds only its inference function, so its batch norms keep the
  statistics they were saved with, while every trainable weight still trains.
- Trainable: what the SavedModel lists in `trainable_variables` (a `model.export` or TF
  Hub folder), else each variable's own flag; the rest stays as saved.
- Variable paths: `<name>/<the SavedModel's variable name>` without TensorFlow's `:0`,
  e.g. `backbone/conv1/kernel`. TFSMLayer itself names them `conv1_kernel:0`, unscoped:
  two variables saved under the same name (`w:0` in two tf.Modules, a layer name used in
  two sub-models) would share a path and collide in the checkpoint's {path: variable}
  dict, and a variable named `head/kernel` (a worklab export) could meet our own head.
  Here a repeated name gets `_1`, `_2`, ... in the order the SavedModel's functions use
  the variables, which is fixed by the file, so a resumed run that loads the folder
  again in a new process finds its variables under the same paths. network.lr_mult
  rules match these paths (`^backbone/` is every SavedModel weight), and weight decay
  reaches those ending in `kernel`, as for Keras models.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, List, Optional

import keras
import tensorflow as tf

from worklab.compat import (restored_argument_names, restored_traces, tfsm_loaded_object, tfsm_weight_hook,
                            track_variable)
from worklab.config.network import NetworkConfig
from worklab.errors import UserError
from worklab.model.saved_model_folder import check_folder

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = ("serve", "serving_default", "__call__")
TRAINING_ARGUMENT = "training"  # the Python flag of a TF Hub reusable SavedModel's __call__


@dataclass(frozen=True)
class Endpoints:
    """The functions `check` chose, and how to call them."""

    call: str
    training: Optional[str]  # None: training calls `call` too
    call_flag: bool  # `call` takes training=False (a TF Hub style __call__)
    training_flag: bool  # `training` takes training=True
    input_dtype: str


def check(cfg: NetworkConfig, image_size: int) -> Endpoints:
    """Check network.path, the endpoints, the input size and the output, reading no weights.

    It loads the SavedModel's functions but not its variables, so build_backbone refuses
    a SavedModel that does not fit before it reads the weights. It starts TensorFlow, so
    before Hydra command.prepare checks the folder alone (saved_model_folder.check_folder).
    Raises UserError naming the key and its value: a missing folder, a folder that is not
    a SavedModel, an endpoint it does not have (the ones it has are listed), one that does
    not take [N, S, S, 3] images of S = reader.image_size, or one whose output is not one
    feature vector or map.
    """
    check_folder(cfg.path)
    try:
        obj = tf.saved_model.load(str(cfg.path), options=tf.saved_model.LoadOptions(experimental_skip_checkpoint=True))
    except Exception as error:  # a damaged or foreign file: TensorFlow's many errors, said in one line
        raise UserError(f"network.path={cfg.path} cannot be loaded as a SavedModel: "
                        f"{_first_line(error)}") from None
    call = cfg.endpoint or next((n for n in DEFAULT_ENDPOINTS if _function(obj, n) is not None), None)
    call_fn = _resolve(obj, "endpoint", call, cfg.path)
    call_flag = _takes_training(call_fn)
    if cfg.training_endpoint:
        training = cfg.training_endpoint
        training_fn = _resolve(obj, "training_endpoint", training, cfg.path)
    else:
        hub_call = _function(obj, "__call__")
        training, training_fn = ("__call__", hub_call) if _training_variants(hub_call) else (None, None)
    training_flag = bool(training_fn is not None and _training_variants(training_fn))
    dtype = _check_function("endpoint", call, call_fn, False if call_flag else None, cfg.path, image_size)
    if training_fn is not None:
        _check_function("training_endpoint", training, training_fn, True if training_flag else None, cfg.path,
                        image_size)
    return Endpoints(call, training, call_flag, training_flag, dtype)


def build_backbone(cfg: NetworkConfig, image_size: int, name: str) -> keras.Model:
    """The SavedModel as a functional model `name`: [N, S, S, 3] float32 images -> its features.

    Raises UserError for everything `check` refuses, before the weights are read.
    """
    endpoints = check(cfg, image_size)
    try:
        layer = SavedModelLayer(str(cfg.path), endpoints.call, endpoints.training, call_flag=endpoints.call_flag,
                                training_flag=endpoints.training_flag, endpoint_dtype=endpoints.input_dtype,
                                name=name)
    except (tf.errors.OpError, OSError, ValueError) as error:  # its variables: missing, damaged
        raise UserError(f"network.path={cfg.path}: the SavedModel's variables cannot be read: "
                        f"{_first_line(error)}") from None
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="saved_model_input")
    features = layer(inputs)
    if not isinstance(features, keras.KerasTensor) or len(features.shape) not in (2, 4):  # an output of unknown rank
        raise UserError(f"network.endpoint={endpoints.call} of the SavedModel in network.path={cfg.path} "
                        f"outputs {_describe(features)}: {NEEDED}")
    trainable = sum(1 for v in layer.variables if v.trainable)
    log.info("saved model %s: endpoint %s, in training %s, %d variables (%d trainable), output %s", cfg.path,
             endpoints.call, endpoints.training or endpoints.call, len(layer.variables), trainable,
             _describe(features))
    return keras.Model(inputs, features, name=name)


@keras.saving.register_keras_serializable(package="worklab")
@tfsm_weight_hook("adopt_weight")  # TFSMLayer.__init__ hands each variable of its endpoints to adopt_weight
class SavedModelLayer(keras.layers.TFSMLayer):
    """TFSMLayer with unique, stable variable paths under the layer's name, listed trainability, one output.

    `call_flag` / `training_flag`: pass training=False / True to the endpoints (a TF Hub
    style __call__ takes the flag as an argument).
    """

    def __init__(self, filepath: str, call_endpoint: str = "serve", call_training_endpoint: Optional[str] = None,
                 call_flag: bool = False, training_flag: bool = False, endpoint_dtype: str = "float32",
                 trainable: bool = True, name: Optional[str] = None, dtype: Any = "float32"):
        # float32 whatever the global policy: Keras would cast the input to bfloat16 under
        # mixed_bfloat16, which the SavedModel's traced functions do not accept.
        super().__init__(filepath, call_endpoint=call_endpoint, call_training_endpoint=call_training_endpoint,
                         trainable=trainable, name=name, dtype=dtype)
        self.call_flag = call_flag
        self.training_flag = training_flag
        self.endpoint_dtype = endpoint_dtype

    def adopt_weight(self, weight: tf.Variable) -> None:
        """Track the SavedModel's variable itself (not a copy) under `<layer name>/<its name>`, made unique."""
        base = f"{self.name}/{re.sub(r':[0-9]+$', '', weight.name)}"
        taken = {v.path for v in self.variables}
        path, n = base, 0
        while path in taken:
            n += 1
            path = f"{base}_{n}"
        parent, leaf = path.rsplit("/", 1)
        parent, _, last = parent.rpartition("/")
        with keras.name_scope(last, override_parent=parent):  # Keras names cannot hold '/', paths can
            variable = keras.Variable(initializer=weight, shape=weight.shape, dtype=weight.dtype,
                                      trainable=self._listed_trainable(weight), name=leaf)
        track_variable(self, variable)

    def _listed_trainable(self, weight: tf.Variable) -> bool:
        listed = getattr(tfsm_loaded_object(self), "trainable_variables", None)
        if isinstance(listed, (list, tuple)):
            return any(v is weight for v in listed)
        return bool(weight.trainable)

    def call(self, inputs, training=False):
        if inputs.dtype != self.endpoint_dtype:
            inputs = tf.cast(inputs, self.endpoint_dtype)
        if training and self.call_training_endpoint:
            fn, flag = self.call_training_endpoint_fn, self.training_flag
            outputs = fn(inputs, **{TRAINING_ARGUMENT: True}) if flag else fn(inputs)
        elif self.call_flag:
            outputs = self.call_endpoint_fn(inputs, **{TRAINING_ARGUMENT: False})
        else:
            outputs = self.call_endpoint_fn(inputs)
        flat = tf.nest.flatten(outputs)
        return flat[0] if len(flat) == 1 else outputs  # a signature's {"output_0": features}

    def get_config(self) -> dict:
        return {**super().get_config(), "call_flag": self.call_flag, "training_flag": self.training_flag,
                "endpoint_dtype": self.endpoint_dtype}


NEEDED = ("worklab needs one feature vector [N, d] or feature map [N, h, w, c]: use a feature-vector model "
          "or one exported without its classifier, or pick another endpoint.")


def _function(obj: Any, name: str) -> Any:
    """The callable attribute or signature `name` of a loaded SavedModel (TFSMLayer's order), or None."""
    fn = getattr(obj, name, None)
    if isinstance(fn, (tf.types.experimental.PolymorphicFunction, tf.types.experimental.ConcreteFunction)):
        return fn
    signatures = getattr(obj, "signatures", None) or {}
    return signatures[name] if name in signatures else None


def _endpoint_names(obj: Any) -> List[str]:
    names = set(getattr(obj, "signatures", None) or {})
    for name in dir(obj):
        if (not name.startswith("_") or name == "__call__") and _function(obj, name) is not None:
            names.add(name)
    return sorted(names)


def _resolve(obj: Any, key: str, name: Optional[str], path: str) -> Any:
    fn = _function(obj, name) if name else None
    if fn is None:
        have = ", ".join(_endpoint_names(obj)) or "none"
        if name:
            raise UserError(f"network.{key}={name} is not a function of the SavedModel in network.path={path}; "
                            f"its functions: {have}. Set network.{key} to one of them.")
        raise UserError(f"The SavedModel in network.path={path} has none of {', '.join(DEFAULT_ENDPOINTS)}; "
                        f"its functions: {have}. Set network.{key} to one of them.")
    return fn


def _flag_position(fn: Any) -> Optional[int]:
    args = restored_argument_names(fn)
    return args.index(TRAINING_ARGUMENT) if TRAINING_ARGUMENT in args else None


def _flag_value(fn: Any, concrete: Any) -> Any:
    """The training flag `concrete` was traced with (None when `fn` has no such argument)."""
    i = _flag_position(fn)
    if i is None:
        return None
    args, kwargs = concrete.structured_input_signature
    return args[i] if i < len(args) else kwargs.get(TRAINING_ARGUMENT)


def _takes_training(fn: Any) -> bool:
    return _flag_position(fn) is not None


def _training_variants(fn: Any) -> List[Any]:
    """The concrete functions of a TF Hub style `fn` traced with training=True."""
    if fn is None or not _takes_training(fn):
        return []
    return [c for c in restored_traces(fn) if _flag_value(fn, c) is True]


def _check_function(key: str, name: str, fn: Any, flag: Optional[bool], path: str, size: int) -> str:
    """Check that `fn` takes one [N, size, size, 3] tensor and gives one rank-2 or rank-4 tensor; its input dtype.

    `flag`: only its functions traced with training=flag count (None: all of them).
    """
    where = f"network.{key}={name} of the SavedModel in network.path={path}"
    traced = [c for c in restored_traces(fn) if flag is None or _flag_value(fn, c) is flag]
    inputs = [(c, _input_spec(c)) for c in traced]
    single = [(c, s) for c, s in inputs if s is not None]
    if not single:
        shown = " or ".join(_inputs(c) for c in traced) or "no input it was saved for"
        raise UserError(f"{where} takes {shown}, not one image tensor: worklab feeds it [N, {size}, {size}, 3] "
                        "images. Pick another endpoint.")
    fits = [(c, s) for c, s in single if _fits(s, size)]
    if not fits:
        sizes = sorted({(s.shape[1], s.shape[2]) for _, s in single
                        if s.shape.rank == 4 and None not in (s.shape[1], s.shape[2])})
        if sizes:
            taken = " or ".join(f"{h}x{w}" for h, w in sizes)
            raise UserError(f"reader.image_size={size}, but {where} takes {taken} images: "
                            f"set reader.image_size={sizes[0][0]}.")
        raise UserError(f"{where} takes {'; '.join(_describe(s) for _, s in single)}, not [N, {size}, {size}, 3] "
                        "images: worklab feeds RGB images of reader.image_size.")
    concrete, spec = fits[0]
    outputs = concrete.structured_outputs
    flat = tf.nest.flatten(outputs)
    ranks = {getattr(getattr(t, "shape", None), "rank", -1) for t in flat}
    if len(flat) != 1 or not ranks <= {2, 4, None}:
        raise UserError(f"{where} outputs {_describe(outputs)}: {NEEDED}")
    return spec.dtype.name


def _input_spec(concrete: Any) -> Optional[tf.TensorSpec]:
    """The one tensor a concrete function takes, or None when it takes several or none."""
    specs = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    return specs[0] if len(specs) == 1 else None


def _inputs(concrete: Any) -> str:
    specs = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    return f"{len(specs)} tensors ({', '.join(_shape(s) for s in specs)})" if specs else "no tensor"


def _fits(spec: tf.TensorSpec, size: int) -> bool:
    if not spec.dtype.is_floating and not spec.dtype.is_integer:
        return False
    if spec.shape.rank is None:
        return True
    return spec.shape.rank == 4 and all(d in (None, want) for d, want in zip(spec.shape[1:], (size, size, 3)))


def _describe(value: Any) -> str:
    """A tensor, spec or structure in words: `a tensor [None, 7, 7, 64]`, `a dict of 2 tensors: ...`."""
    if isinstance(value, dict):
        items = ", ".join(f"{k} {_shape(v)}" for k, v in sorted(value.items()))
        return f"a dict of {len(value)} tensors: {items}" if len(value) != 1 else f"a dict with {items}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}: {', '.join(_describe(v) for v in value)}"
    shape = getattr(value, "shape", None)
    if shape is None:
        return repr(value)
    rank = len(shape) if getattr(shape, "rank", 0) is not None else None
    if rank == 0:
        return "a scalar (shape [])"
    return f"a tensor {_shape(value)}"


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is None or getattr(shape, "rank", 0) is None:
        return "of unknown shape"
    return "[" + ", ".join("None" if d is None else str(d) for d in tuple(shape)) + "]"


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
