"""network=applications: the architecture table against Keras, and weight files loaded bit for bit or refused.

Every network here is built at 32 px with fresh weights and written to a weight file in
the test; nothing is downloaded (the ImageNet cases stand a local file in for Keras'
download, or check the offline message with no way out).
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from conftest import ROOT
from worklab.config import architectures
from worklab.config.network import ArchArgs, NetworkConfig
from worklab.config.reader import ReaderConfig
from worklab.config.root import Config
from worklab.config.schedules import FixedSchedule
from worklab.errors import UserError
from worklab.model import networks
from worklab.model.applications import build_backbone, load_weights
from worklab.model.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocess, settings

SIZE = 32
COMMON = {"include_top", "weights", "input_tensor", "input_shape", "pooling", "classes", "classifier_activation",
          "name"}


def config(arch: str, weights=None, **args) -> Config:
    network = NetworkConfig(kind="applications", arch=arch, arch_args=ArchArgs(**args),
                            weights=None if weights is None else str(weights))
    return Config(reader=ReaderConfig(image_size=SIZE), network=network, schedule=FixedSchedule())


def keras_model(arch: str, **kwargs) -> keras.Model:
    """Keras' own model at SIZE with fresh weights and non-trivial statistics, so that they count.

    A Normalization layer's mean and variance are drawn at random; batch norm's come from
    `calibrate`.
    """
    model = getattr(keras.applications, arch)(weights=None, input_shape=(SIZE, SIZE, 3), **kwargs)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization) and layer.weights:
            layer.adapt_mean.assign(rng.normal(0.4, 0.1, layer.adapt_mean.shape).astype("float32"))
            layer.adapt_variance.assign(rng.uniform(0.03, 0.1, layer.adapt_variance.shape).astype("float32"))
            layer.finalize_state()
    return calibrate(model, arch)


def calibrate(model: keras.Model, arch: str) -> keras.Model:
    """Batch norm's statistics set to those of a batch of random images (momentum 0 for one training call).

    Random statistics would make the features of MobileNet and EfficientNet at this size
    the same for every image, and a comparison of features prove nothing.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(preprocess_input(arch, images(8, seed=4)), training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model


def preprocess_input(arch: str, batch: np.ndarray) -> np.ndarray:
    """Keras' own preprocess_input of the architecture's module, on a copy (caffe's works in place)."""
    return getattr(keras.applications, architectures.get(arch).module).preprocess_input(batch.copy())


def save_legacy_weights(model: keras.Model, path) -> None:
    """A Keras 2 weights-only file, the layout of the files Keras keeps in ~/.keras/models."""
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)


def save(model: keras.Model, folder, layout: str):
    """The model's weights in a Keras 3 weights file (layout keras3) or a Keras 2 weights-only file (legacy)."""
    if layout == "keras3":
        model.save_weights(folder / "x.weights.h5")
        return folder / "x.weights.h5"
    save_legacy_weights(model, folder / "x_notop.h5")
    return folder / "x_notop.h5"


def load(cfg: Config):
    """Build the whole network as a run does and load network.weights into it: (model, the log line)."""
    model = networks.build(cfg, 3)
    return model, networks.pretrained_weights(model, cfg)()


def assert_same_weights(ours: list, theirs: list) -> None:
    """Equal in order, bit for bit (names are not compared: auto-named ones count up through the process)."""
    assert len(ours) == len(theirs)
    for mine, original in zip(ours, theirs):
        np.testing.assert_array_equal(mine.numpy(), original.numpy(), err_msg=mine.path, strict=True)


def images(count: int = 4, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


# The table --------------------------------------------------------------------------------------------------------

def test_the_names_are_keras_applications():
    assert architectures.NAMES == sorted(name for name in dir(keras.applications)
                                         if name[0].isupper() and callable(getattr(keras.applications, name)))


@pytest.mark.parametrize("name", architectures.NAMES)
def test_module_arguments_and_smallest_input(name):
    arch, constructor = architectures.get(name), getattr(keras.applications, name)
    assert constructor.__module__.endswith("." + arch.module)
    assert arch.args == tuple(p for p in inspect.signature(constructor).parameters if p not in COMMON)
    too_small = arch.min_size - 1
    with pytest.raises(ValueError, match=f"at least {arch.min_size}x{arch.min_size}"):
        constructor(include_top=False, weights=None, input_shape=(too_small, too_small, 3))


@pytest.mark.parametrize("module", sorted({arch.module for arch in architectures.ARCHITECTURES.values()}))
def test_each_family_preprocessing_gives_keras_floats(module):
    mode = next(arch.preprocessing for arch in architectures.ARCHITECTURES.values() if arch.module == module)
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = Preprocess(mode, **settings(mode, IMAGENET_MEAN, IMAGENET_STD))(pixels)
    theirs = getattr(keras.applications, module).preprocess_input(pixels.copy())
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-5)


# Weight files -----------------------------------------------------------------------------------------------------

# The default suite loads the small backbones, in both file layouts; the large ones (their families'
# preprocessing is compared with Keras' above) are marked slow.
SLOW = pytest.mark.slow


@pytest.mark.parametrize("arch, args, layout", [
    pytest.param(arch, args, layout, id=f"{arch}-{layout}", marks=marks) for arch, args, layout, marks in [
        ("ResNet50", {}, "keras3", SLOW),
        ("ResNet50", {}, "legacy", SLOW),
        ("ResNet50V2", {}, "keras3", SLOW),
        ("MobileNetV2", {"alpha": 0.35}, "keras3", ()),
        ("MobileNetV3Small", {}, "keras3", ()),
        ("EfficientNetB0", {}, "legacy", ()),
        ("EfficientNetV2B0", {}, "keras3", SLOW),
        ("DenseNet121", {}, "keras3", SLOW),
        ("ConvNeXtTiny", {}, "keras3", SLOW),
    ]])
def test_a_weight_file_loads_bit_for_bit_with_the_familys_preprocessing(tmp_path, arch, args, layout):
    """Every backbone weight is the file's, and the features before the head are Keras' own on its own
    preprocess_input: the loading and the preprocessing layer are both right."""
    keras.utils.set_random_seed(0)
    original = keras_model(arch, include_top=False, **args)
    path = save(original, tmp_path, layout)

    model, line = load(config(arch, path, **args))
    assert f"layers of {arch} from {path}" in line and "skipped" not in line
    assert_same_weights(model.get_layer(networks.BACKBONE).weights, original.weights)

    batch = images()
    features = keras.Model(model.inputs, model.get_layer("head_pool").output)([batch])
    reference = getattr(keras.applications, arch)(include_top=False, weights=str(path), pooling="avg",
                                                    input_shape=(SIZE, SIZE, 3), **args)
    expected = np.asarray(reference(preprocess_input(arch, batch)))
    np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-4)
    others = np.asarray(reference(preprocess_input(arch, batch[::-1])))
    assert np.abs(others - expected).max() > 1e-2 * np.abs(expected).max()  # the features tell images apart


@pytest.mark.parametrize("layout", ["keras3", "legacy_model"])
def test_a_file_with_the_classification_top_loads_without_it(tmp_path, layout):
    keras.utils.set_random_seed(0)
    original = keras_model("MobileNetV2", include_top=True, classes=7, alpha=0.35)
    path = tmp_path / ("top.weights.h5" if layout == "keras3" else "top.h5")
    if layout == "keras3":
        original.save_weights(path)
    else:
        original.save(path)  # Keras 3 writes Keras 2's full-model format for .h5
        with h5py.File(path, "r") as file:
            assert "layer_names" in file["model_weights"].attrs and "layers" not in file

    model, line = load(config("MobileNetV2", path, alpha=0.35))
    assert "skipped the file's 1 layer the backbone has not: predictions (the 7-class top)" in line
    backbone = model.get_layer(networks.BACKBONE).weights
    assert [w.path for w in original.weights[len(backbone):]] == ["predictions/kernel", "predictions/bias"]
    assert_same_weights(backbone, original.weights[:len(backbone)])


@pytest.mark.parametrize("arch, args, theirs, layout", [
    pytest.param("DenseNet121", {}, r"the file's \S+ has \(7, 7, 3, 64\)", "keras3", id="DenseNet121-keras3"),
    pytest.param("DenseNet121", {}, r"the file's \S+ has \(7, 7, 3, 64\)", "legacy", id="DenseNet121-legacy",
                 marks=SLOW),
    pytest.param("MobileNetV2", {"alpha": 1.0}, r"the file's \S+ has \(3, 3, 3, 32\)", "keras3",
                 id="MobileNetV2-alpha1-keras3", marks=SLOW),
    pytest.param("MobileNetV2", {"alpha": 1.0}, r"the file's \S+ has \(3, 3, 3, 32\)", "legacy",
                 id="MobileNetV2-alpha1-legacy"),
])
def test_a_file_of_another_architecture_is_refused_before_any_weight_changes(tmp_path, layout, arch, args, theirs):
    keras.utils.set_random_seed(0)
    path = save(keras_model(arch, include_top=False, **args), tmp_path, layout)
    cfg = config("MobileNetV2", path, alpha=0.35)
    model = networks.build(cfg, 3)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(UserError, match=rf"network.weights={path} does not fit MobileNetV2 with "
                                        rf"network.arch_args={{alpha: 0.35}}: the backbone's layer Conv1 has shapes "
                                        rf"\(3, 3, 3, 16\), {theirs}"):
        networks.pretrained_weights(model, cfg)()
    for value, weight in zip(before, model.weights):
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.parametrize("layout", ["keras3", "legacy"])
def test_a_file_that_lacks_a_layer_is_refused(tmp_path, layout):
    keras.utils.set_random_seed(0)
    whole = keras_model("MobileNetV2", include_top=False, alpha=0.35)
    path = save(keras.Model(whole.inputs, whole.get_layer("block_1_project_BN").output), tmp_path, layout)
    cfg = config("MobileNetV2", path, alpha=0.35)
    with pytest.raises(UserError, match=r"it has no weights for the backbone's layer block_2_expand \(the file has "
                                        r"\d+ layers with weights, the backbone \d+\)"):
        load(cfg)


@pytest.fixture(scope="module")
def small_backbone():
    return build_backbone(config("MobileNetV2", alpha=0.35).network, SIZE, "backbone")


def test_a_missing_file_or_one_that_is_not_keras_weights_is_refused(tmp_path, small_backbone):
    def refused(weights, message):
        cfg = config("MobileNetV2", weights, alpha=0.35).network
        with pytest.raises(UserError, match=message):
            load_weights(small_backbone, cfg, SIZE)

    refused(tmp_path / "missing.h5", rf"network.weights={tmp_path}/missing.h5 does not exist")
    (tmp_path / "text.h5").write_text("not a weight file")
    refused(tmp_path / "text.h5", rf"network.weights={tmp_path}/text.h5 is not an HDF5 weight file")
    with h5py.File(tmp_path / "data.h5", "w") as file:
        file["x"] = np.zeros(3)
    refused(tmp_path / "data.h5", rf"network.weights={tmp_path}/data.h5 is an HDF5 file but not Keras weights")


def test_a_user_path_is_expanded(tmp_path, small_backbone, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    keras_model("MobileNetV2", include_top=False, alpha=0.35).save_weights(tmp_path / "m.weights.h5")
    line = load_weights(small_backbone, config("MobileNetV2", "~/m.weights.h5", alpha=0.35).network, SIZE)
    assert f"from {tmp_path}/m.weights.h5" in line


def test_a_bad_arch_args_value_is_a_user_error():
    with pytest.raises(UserError, match=r"Keras refuses MobileNet with network.arch_args=\{depth_multiplier: 0\} "
                                        r"at 32x32: Invalid value for argument `depth_multiplier`"):
        networks.build(config("MobileNet", depth_multiplier=0), 3)


# ImageNet ---------------------------------------------------------------------------------------------------------

def test_imagenet_efficientnet_gets_keras_rescaling_folded_in(tmp_path, monkeypatch):
    """Keras builds EfficientNet (v1) for ImageNet with an extra Rescaling the backbone lacks; with a local file
    standing in for the download, the features equal Keras' ImageNet model's."""
    keras.utils.set_random_seed(0)
    path = tmp_path / "efficientnetb0_notop.h5"
    save_legacy_weights(keras_model("EfficientNetB0", include_top=False), path)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *args, **kwargs: str(path))
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", pooling="avg",
                                                  input_shape=(SIZE, SIZE, 3))
    save_legacy_weights(calibrate(reference, "EfficientNetB0"), path)  # statistics of the model with the Rescaling

    model, line = load(config("EfficientNetB0", "imagenet"))
    assert "from Keras' ImageNet weights; Keras' ImageNet rescaling" in line
    batch = images()

    def stem(net: keras.Model, x) -> np.ndarray:
        return np.asarray(keras.Model(net.inputs, net.get_layer("stem_activation").output)([x]))

    ours = stem(model.get_layer(networks.BACKBONE), model.get_layer("preprocess")(batch))
    np.testing.assert_allclose(ours, stem(reference, batch), rtol=1e-5, atol=1e-5)
    # 16 blocks of random weights turn the fold's rounding (1e-7) into up to 1e-2 of the largest feature
    features = np.asarray(keras.Model(model.inputs, model.get_layer("head_pool").output)([batch]))
    expected = np.asarray(reference(batch))
    np.testing.assert_allclose(features, expected, rtol=1e-3, atol=1e-2 * np.abs(expected).max())


def test_imagenet_offline_says_where_keras_looks_and_what_to_pass(tmp_path):
    script = textwrap.dedent("""
        from worklab.config.network import ArchArgs, NetworkConfig
        from worklab.errors import UserError
        from worklab.model.applications import build_backbone, load_weights
        cfg = NetworkConfig(kind="applications", arch="MobileNetV2", arch_args=ArchArgs(alpha=0.35), weights="imagenet")
        try:
            load_weights(build_backbone(cfg, 32, "backbone"), cfg, 32)
        except UserError as error:
            print(error)
    """)
    proxy = "http://127.0.0.1:9"  # nothing listens there: no download can happen
    env = {key: value for key, value in os.environ.items() if key.lower() != "no_proxy"}
    env.update(KERAS_HOME=str(tmp_path / "keras"), https_proxy=proxy, http_proxy=proxy, HTTPS_PROXY=proxy,
               HTTP_PROXY=proxy, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert "network.weights=imagenet could not be fetched for MobileNetV2" in result.stdout, result.stderr
    assert f"Keras looks for the cached file in {tmp_path}/keras/models" in result.stdout
    assert "network.weights=PATH" in result.stdout
