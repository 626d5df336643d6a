"""network=applications: a Keras Applications body as the backbone, and the weights it starts from.

The backbone is the constructor's feature map (include_top=False, no pooling) built with
fresh weights, so building never downloads and a resumed run, whose weights come from
its checkpoint, never reads network.weights. On a fresh start `load_weights` fills it from
- a Keras 3 weights file (`model.save_weights("x.weights.h5")`);
- a Keras 2 HDF5 file: weights only (the files Keras keeps in ~/.keras/models) or a
  whole model (`model.save("x.h5")`);
- `imagenet`: Keras' own download, cached in KERAS_HOME/models (~/.keras/models).

A file saved with the classification top loads with the top skipped. Every shape is
compared before anything is assigned, so a file of another architecture or other
arch_args is refused naming the first layer that does not fit, never half loaded
(Keras' own error for it runs to hundreds of lines).

File entries meet the backbone's layers the way Keras' own loaders pair them:
- Keras 3 file: by the path Keras' saving_lib gives a layer, its snake_case class name
  with a counter per container (`layers/conv2d_3`), nested models under their own
  `layers/`. A top's layers come after the backbone's, so they only add paths.
- Keras 2 file: by order of the layers with weights, as Keras' legacy loader does, since
  the names of auto-named layers (EfficientNet's `normalization`, ConvNeXt's last
  `layer_normalization`) depend on what the process built before. A top is the trailing
  layers.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, List, Tuple

import h5py
import keras
import numpy as np

from worklab.compat import snake_case_name  # the names Keras' saving_lib gives weight file entries
from worklab.config.network import NetworkConfig
from worklab.errors import UserError

# What a backbone's layers take: key (a Keras 3 path or a position) -> the layer and its variables.
_Targets = Dict[Hashable, Tuple[keras.layers.Layer, list]]


@dataclass
class _Entry:
    """One layer's weights in a source: a file's datasets or a model's variables, in the layer's order."""

    name: str
    arrays: list  # anything with .shape that np.asarray reads


def build_backbone(cfg: NetworkConfig, image_size: int, name: str) -> keras.Model:
    """The feature map body of `cfg.arch` with fresh weights and Keras' own layer names, called `name`.

    It is built under Keras' default model name and renamed after: EfficientNetV2 looks
    its blocks up by that name, and ConvNeXt puts it before every layer's name
    (convnext_tiny_stage_0_block_0_depthwise_conv, as in Keras' ImageNet models).

    Raises:
        UserError: Keras refuses an arch_args value (MobileNet's depth_multiplier=0).
    """
    try:
        model = getattr(keras.applications, cfg.arch)(
            include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling=None,
            **cfg.arch_args.given())
    except (TypeError, ValueError) as error:
        raise UserError(f"Keras refuses {_arch(cfg)} at {image_size}x{image_size}: {_first_line(error)}") from None
    model.name = name
    return model


def load_weights(backbone: keras.Model, cfg: NetworkConfig, image_size: int) -> str:
    """Load network.weights into `backbone`, every shape checked first; one line for the log.

    Raises:
        UserError: the file is missing or not Keras HDF5 weights, a layer's shapes differ
            from the file's or the file lacks it, or the ImageNet weights cannot be had.
    """
    if cfg.weights == "imagenet":
        return _load_imagenet(backbone, cfg, image_size)
    path = _weight_file(cfg.weights)
    with h5py.File(path, "r") as file:
        legacy = _legacy_group(file)
        if legacy is not None:
            targets, source, kind = _by_order(backbone), _legacy_entries(legacy), "Keras 2 HDF5"
        elif isinstance(file.get("layers"), h5py.Group):
            targets, source, kind = _by_path(backbone), _keras3_entries(file), "Keras 3 weights"
        else:
            raise UserError(f"network.weights={path} is an HDF5 file but not Keras weights (neither a Keras 3 "
                            "weights file nor a Keras 2 .h5 with layer_names).")
        skipped = _skipped(_check(targets, source, f"network.weights={path}", cfg))
        _assign(targets, source)
    return f"network.weights: {len(targets)} layers of {cfg.arch} from {path} ({kind}){skipped}"


def _weight_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"network.weights={value} does not exist: pass a weight file, imagenet, or none.")
    if not path.is_file() or not h5py.is_hdf5(path):
        raise UserError(f"network.weights={value} is not an HDF5 weight file (.h5 or .weights.h5); a .keras "
                        "model file is a zip, which network=keras takes.")
    return path


def _by_path(model: keras.Model) -> _Targets:
    """Each layer with weights under the path Keras 3 saves it at (saving_lib._save_container_state).

    Per container, a layer is named by its snake_case class name, `_N` from the second
    of a class on; weightless layers and the InputLayer count too. A nested model's
    layers are a container of their own under `<its path>/layers`; Keras Applications'
    other layers own all their weights.
    """
    targets: _Targets = {}
    visited = set()

    def walk(layers, prefix):
        counts: Dict[str, int] = {}
        for layer in layers:
            kind = snake_case_name(type(layer).__name__)
            counts[kind] = counts.get(kind, -1) + 1
            path = f"{prefix}/{kind}" + (f"_{counts[kind]}" if counts[kind] else "")
            if id(layer) in visited:
                continue
            visited.add(id(layer))
            if isinstance(layer, keras.Model):
                walk(layer.layers, f"{path}/layers")
            elif layer.weights:
                targets[path] = (layer, layer.weights)

    walk(model.layers, "layers")
    return targets


def _keras3_entries(file: h5py.File) -> Dict[str, _Entry]:
    """Every layer's weights in a Keras 3 weights file by path; the layer's name when the file has it."""
    entries = {}

    def visit(name, group):
        if name.endswith("/vars") and isinstance(group, h5py.Group) and len(group):
            path = name[:-len("/vars")]
            entries[path] = _Entry(str(group.attrs.get("name", path)), [group[str(i)] for i in range(len(group))])

    file["layers"].visititems(lambda name, group: visit(f"layers/{name}", group))
    return dict(sorted(entries.items(), key=lambda item: _natural(item[0])))


def _legacy_group(file: h5py.File):
    """The group of a Keras 2 HDF5 file that lists its layers (a whole model's is model_weights), or None."""
    if _attribute(file, "layer_names"):
        return file
    weights = file.get("model_weights")
    return weights if isinstance(weights, h5py.Group) and _attribute(weights, "layer_names") else None


def _by_order(model: keras.Model) -> _Targets:
    """Each top-level layer with weights by position, its variables in Keras 2's order (trainable first)."""
    layers = [layer for layer in model.layers if layer.weights]
    return {i: (layer, layer.trainable_weights + layer.non_trainable_weights) for i, layer in enumerate(layers)}


def _legacy_entries(group: h5py.Group) -> Dict[int, _Entry]:
    """The layers with weights of a Keras 2 file in its layer_names order."""
    entries = []
    for name in _attribute(group, "layer_names"):
        weight_names = _attribute(group[name], "weight_names")
        if weight_names:
            entries.append(_Entry(name, [group[name][weight] for weight in weight_names]))
    return dict(enumerate(entries))


def _attribute(group: h5py.Group, name: str) -> List[str]:
    """A list attribute of a Keras 2 file, which Keras splits into name0, name1, ... when it is long."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def _check(targets: _Targets, source: Dict[Hashable, _Entry], what: str, cfg: NetworkConfig) -> List[_Entry]:
    """Refuse a source that lacks a backbone layer or holds other shapes for it; return what it has beyond."""
    arch = _arch(cfg)
    for key, (layer, variables) in targets.items():
        entry = source.get(key)
        if entry is None:
            raise UserError(f"{what} does not fit {arch}: it has no weights for the backbone's layer {layer.name} "
                            f"(the file has {len(source)} layers with weights, the backbone {len(targets)}). "
                            "Pass a weight file of this architecture and these arch_args.")
        ours = [tuple(variable.shape) for variable in variables]
        theirs = [tuple(array.shape) for array in entry.arrays]
        if ours != theirs:
            raise UserError(f"{what} does not fit {arch}: the backbone's layer {layer.name} has shapes "
                            f"{_shapes(ours)}, the file's {entry.name} has {_shapes(theirs)}. Is the file of "
                            "another architecture or other arch_args?")
    return [entry for key, entry in source.items() if key not in targets]


def _assign(targets: _Targets, source: Dict[Hashable, _Entry]) -> None:
    for key, (layer, variables) in targets.items():
        for variable, array in zip(variables, source[key].arrays):
            variable.assign(np.asarray(array))
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()  # its mean and variance tensors are computed from the variables


def _load_imagenet(backbone: keras.Model, cfg: NetworkConfig, image_size: int) -> str:
    """Copy Keras' ImageNet-weighted model layer by layer; EfficientNet's extra rescaling is folded in."""
    pretrained = _imagenet_model(cfg, image_size)
    targets, theirs = _by_path(backbone), _by_path(pretrained)
    source = {path: _Entry(layer.name, variables) for path, (layer, variables) in theirs.items()}
    _check(targets, source, "network.weights=imagenet", cfg)
    _assign(targets, source)
    twins = {id(theirs[path][0]): layer for path, (layer, _) in targets.items()}
    folded = _fold_rescaling(pretrained, backbone, twins)
    note = "; Keras' ImageNet rescaling (tensorflow#49930) folded into the normalization's variance" if folded else ""
    return f"network.weights=imagenet: {len(targets)} layers of {cfg.arch} from Keras' ImageNet weights{note}"


def _imagenet_model(cfg: NetworkConfig, image_size: int) -> keras.Model:
    """Keras' model with its ImageNet weights: downloaded once into KERAS_HOME/models, read from there after."""
    try:
        return getattr(keras.applications, cfg.arch)(
            include_top=False, weights="imagenet", input_shape=(image_size, image_size, 3), **cfg.arch_args.given())
    except ValueError as error:
        raise UserError(f"network.weights=imagenet: Keras refuses {_arch(cfg)} with ImageNet weights: "
                        f"{_first_line(error)}") from None
    except Exception as error:  # Keras raises a bare Exception when the download fails
        cache = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models"
        raise UserError(f"network.weights=imagenet could not be fetched for {cfg.arch} ({_first_line(error)}). "
                        f"Keras looks for the cached file in {cache} (KERAS_HOME moves it): put the file named in "
                        "the address there, or pass a weight file instead: network.weights=PATH.") from None


def _fold_rescaling(pretrained: keras.Model, backbone: keras.Model, twins: Dict[int, keras.layers.Layer]) -> bool:
    """Fold a Rescaling that follows a Normalization in `pretrained` but not in `backbone` into its variance.

    Keras builds EfficientNet (v1) for ImageNet with a Rescaling by 1/sqrt(std) after its
    Normalization, which a model built without weights lacks; (x - m) / sqrt(v) * s is
    (x - m) / sqrt(v / s^2). `twins` maps a pretrained layer's id to the backbone's layer.
    """
    folded = False
    for before, after in zip(pretrained.layers, pretrained.layers[1:]):
        if not (isinstance(before, keras.layers.Normalization) and isinstance(after, keras.layers.Rescaling)):
            continue
        twin = twins[id(before)]
        following = backbone.layers[backbone.layers.index(twin) + 1]
        if isinstance(following, keras.layers.Rescaling):
            continue
        twin.adapt_variance.assign(np.asarray(before.adapt_variance) / np.square(np.asarray(after.scale)))
        twin.finalize_state()
        folded = True
    return folded


def _skipped(entries: List[_Entry]) -> str:
    if not entries:
        return ""
    names = ", ".join(entry.name for entry in entries[:4]) + (", ..." if len(entries) > 4 else "")
    outputs = entries[-1].arrays[-1].shape[-1]
    layers = f"{len(entries)} layer{'s' if len(entries) > 1 else ''}"
    return f"; skipped the file's {layers} the backbone has not: {names} (the {outputs}-class top)"


def _natural(text: str) -> list:
    """conv2d_2 before conv2d_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _shapes(shapes: List[tuple]) -> str:
    return ", ".join(str(shape) for shape in shapes) or "none"


def _arch(cfg: NetworkConfig) -> str:
    """MobileNetV2 with network.arch_args={alpha: 0.35}, for messages."""
    args = cfg.arch_args.given()
    shown = ", ".join(f"{key}: {value}" for key, value in args.items())
    return f"{cfg.arch} with network.arch_args={{{shown}}}" if args else cfg.arch


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
