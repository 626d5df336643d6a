"""Which input scaling a network gets: the modes' names and the policy that picks one for a config.

The policy is a function of the config alone (network.preprocessing, the network's kind,
a Keras Application's family in the architecture catalogue, a restore mapping's
checkpoint), so it sits in the config layer: the schemas check network.preprocessing
and restore.preprocessing against PREPROCESSING, the root config refuses reader.mean and
reader.std when the mode is not mean_std, and the network's first layer
(worklab.model.preprocessing, which has each mode's numbers) asks it for the mode.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from worklab.config import architectures

if TYPE_CHECKING:
    from worklab.config.root import Config

# How a network scales the reader's 0-255 RGB images (worklab.model.preprocessing has the numbers).
PREPROCESSING = ("mean_std", "torch", "caffe", "tf", "unit", "raw", "ry", "vgg")


def input_preprocessing(cfg: Config) -> str:
    """How the network scales its 0-255 input: network.preprocessing when set, else the network's own.

    The network's own: a Keras Application's family preprocessing; for a ResNet, the one
    the restore mapping's checkpoint was trained with, else mean_std (reader.mean and
    reader.std, worklab's default); for a Keras model file mean_std too; for a SavedModel
    feature extractor unit ([0, 1], TF Hub's convention for image inputs).
    """
    network = cfg.network
    if network.preprocessing:
        return network.preprocessing
    if network.kind == "applications":
        return architectures.get(network.arch).preprocessing
    if network.kind == "saved_model":
        return "unit"
    return (cfg.restore.preprocessing if network.kind == "resnet" else None) or "mean_std"
