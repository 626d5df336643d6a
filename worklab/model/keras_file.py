"""network=keras: somebody else's Keras model file, cut at a layer, as the body of a network.

The file is a .keras model or a Keras 2 .h5 full-model file, which Keras 3 loads. It is
loaded in Keras' safe mode: a file that would run code it carries (a Lambda layer's
bytecode) is refused, not executed. The layer network.cut (by default the one before
the old head) feeds the fresh `head` worklab.model.networks adds; the variables keep the
file's layer names, so network.lr_mult and restore rules match them (e.g. `^conv1/`),
and their weights come from the file. The file's model takes the preprocessed images
(network.preprocessing, by default mean_std from reader.mean and reader.std).
"""
from __future__ import annotations

from pathlib import Path

import keras

from worklab.config.network import NetworkConfig
from worklab.errors import UserError


def load_base(path: Path) -> keras.Model:
    """Load the model file in safe mode, turning each way it can fail into a message about the file."""
    if not path.is_file():
        raise UserError(f"network.path={path} does not exist.")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        if "arbitrary code execution" in str(error):
            raise UserError(f"network.path={path} has a layer that would run code stored in the file (a Lambda "
                            "layer). worklab loads models in Keras' safe mode and does not run it: rebuild the "
                            "model without Lambda layers.") from None
        raise UserError(f"network.path={path} cannot be loaded as a Keras model: {str(error).splitlines()[0]}") \
            from None
    except OSError as error:
        raise UserError(f"network.path={path} is not a Keras model file (.keras or .h5): {error}") from None


def build_body(cfg: NetworkConfig, image_size: int) -> keras.Model:
    """The file's model up to network.cut (by default the layer before its old head), weights from the file."""
    base = load_base(Path(cfg.path))
    size = tuple(base.inputs[0].shape[1:3])
    if None not in size and size != (image_size, image_size):
        raise UserError(f"reader.image_size={image_size}, but the model in network.path={cfg.path} takes "
                        f"{size[0]}x{size[1]} images: set reader.image_size={size[0]}.")
    cut = cfg.cut or base.layers[-2].name
    try:
        features = base.get_layer(cut).output
    except ValueError:
        names = [layer.name for layer in base.layers]
        raise UserError(f"network.cut={cut} is not a layer of {cfg.path}; its layers: {', '.join(names)}.") \
            from None
    return keras.Model(base.inputs, features, name=base.name)
