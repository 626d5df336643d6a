"""The network a run trains: 0-255 images in, float32 logits out, whatever its kind.

Every kind is assembled the same way: the input `images`, the preprocessing layer
(worklab.model.preprocessing), the body (worklab's ResNet, a Keras model file cut at a
layer, a Keras Application, or a SavedModel feature extractor), global average pooling
when the body gives a feature map, and a fresh dense `head` for our classes. Building
starts from fresh weights: pretrained weights are the session's to load, on a fresh
start only (`pretrained_weights`), so that a resumed run never reads them.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Tuple

import keras

from worklab.compat import reset_keras_names
from worklab.config.network import NetworkConfig
from worklab.config.root import Config
from worklab.model import preprocessing

log = logging.getLogger(__name__)

BACKBONE = "backbone"  # the name of the nested body of network=applications and network=saved_model


def build(cfg: Config, num_classes: int) -> keras.Model:
    """The network of `cfg` for `num_classes` classes, with its preprocessing as its first layer."""
    kind, size = cfg.network.kind, cfg.reader.image_size
    # Keras numbers the layers and variables a constructor leaves unnamed per process
    # (ConvNeXt's layer_normalization_3, EfficientNet's normalization_1): counting from
    # zero at every build gives a network the same variable paths, which its checkpoints
    # are keyed by, in a fresh process and in a second build in the same one (hyper, tests).
    reset_keras_names()
    preprocess = preprocessing.for_config(cfg)
    log.info("input preprocessing: %s", preprocess.describe())
    if kind == "resnet":
        from worklab.model.resnet import build_resnet
        return build_resnet(cfg.network, num_classes, size, preprocess)
    if kind == "keras":
        from worklab.model.keras_file import build_body
        body = build_body(cfg.network, size)
    elif kind == "applications":
        from worklab.model.applications import build_backbone
        body = build_backbone(cfg.network, size, name=BACKBONE)
    else:
        from worklab.model.saved_model import build_backbone
        body = build_backbone(cfg.network, size, name=BACKBONE)
    return with_head(body, preprocess, num_classes, size)


def with_head(body: keras.Model, preprocess: keras.layers.Layer, num_classes: int, size: int) -> keras.Model:
    """images -> preprocess -> body -> pooling (for a feature map) or flattening -> a fresh dense head."""
    inputs = keras.Input((size, size, 3), name="images")
    features = body(preprocess(inputs))
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    elif len(features.shape) != 2:
        features = keras.layers.Flatten(name="head_flatten")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head")(features)
    return keras.Model(inputs, logits, name=body.name if body.name != BACKBONE else "network")


def describe(network: NetworkConfig, model: keras.Model) -> str:
    """The architecture of `model`, built from `network`, with its kind and size: the log's name for it.

    The model's own name will not do: a nested body (applications, saved_model) leaves it
    "network", and a ResNet's gives its depth but not its width.
    """
    if network.kind == "resnet":
        return f"ResNet-{network.depth} (resnet, width={network.width:g}, layout={network.layout})"
    if network.kind == "applications":
        given = "".join(f", {key}={value}" for key, value in network.arch_args.given().items())
        return f"{network.arch} (applications{given})"
    if network.kind == "keras":
        return f"{model.name} from {network.path} (keras)"
    return f"{network.path} (saved_model)"


def pretrained_weights(model: keras.Model, cfg: Config) -> Optional[Callable[[], str]]:
    """What loads network.weights into `model` on a fresh start, or None when the network has none to load."""
    if cfg.network.kind != "applications" or not cfg.network.weights or cfg.network.weights == "none":
        return None
    from worklab.model.applications import load_weights
    return lambda: load_weights(model.get_layer(BACKBONE), cfg.network, cfg.reader.image_size)


def layer_variables(model: keras.Model) -> List[Tuple[str, List[str]]]:
    """(name, variable paths) of each layer in the model's order, nested models opened.

    worklab's own composite layers (a ResNet's stem, stages) count as one layer each:
    network.freeze and schedule=inspect speak of the layers a user sees in the model.
    """
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            rows += layer_variables(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            rows.append((layer.name, [v.path for v in layer.variables]))
    return rows
