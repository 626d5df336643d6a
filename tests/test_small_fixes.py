"""Small fixes from the issue tracker: each case failed before its fix."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import List

import numpy as np
import pytest
from PIL import Image

from conftest import compose, one_device
from worklab.config.network import ArchArgs, NetworkConfig
from worklab.config.schedules import PredictSchedule
from worklab.data.imagelist import ImageList, warn_missing_classes
from worklab.errors import UserError
from worklab.interrupt import StopRequest


def test_predict_without_run_or_model_asks_for_one_of_them():
    with pytest.raises(UserError, match="needs one of schedule.run=RUN") as refused:
        PredictSchedule(images="images.json")
    assert "not both" not in str(refused.value) and "neither" in str(refused.value)
    with pytest.raises(UserError, match="schedule.run=a or schedule.model=b, not both"):
        PredictSchedule(images="images.json", run="a", model="b")


def test_a_validation_list_lacking_classes_is_warned_naming_them(caplog):
    images = ImageList("val.json", ["/a.png", "/b.png"], [0, 2])
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        assert warn_missing_classes(images, ["cat", "dog", "eel", "fox"]) is images
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "val.json (reader.val) has no images of 2 of the 4 classes" in warnings[0]
    assert "dog, fox" in warnings[0] and "F1" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        warn_missing_classes(ImageList("val.json", ["/a.png", "/b.png"], [0, 1]), ["cat", "dog"])
    assert caplog.records == []


def test_a_run_warns_of_the_classes_its_validation_list_lacks(tmp_path, data_dir, caplog):
    from worklab.run.parts import Parts

    train = compose([], tmp_path / "run", data_dir)
    demo_test = Path(Parts(train, StopRequest(), one_device()).inputs.sources[1])
    kept = {path: label for path, label in json.loads(demo_test.read_text()).items() if label in ("circle", "square")}
    val = tmp_path / "val.json"
    val.write_text(json.dumps({str((demo_test.parent / path).resolve()): label for path, label in kept.items()}))
    parts = Parts(compose([f"reader.val={val}"], tmp_path / "run", data_dir), StopRequest(), one_device())
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        assert len(parts.inputs.val_images) == 6
    lacking = [r.getMessage() for r in caplog.records if "(reader.val) has no images" in r.getMessage()]
    assert len(lacking) == 1
    assert "8 of the 10 classes of the training list: checker, cross, diagonal, dots, hstripes, ring, triangle, " \
           "vstripes." in lacking[0]


def write_images(folder: Path, names) -> None:
    """Tiny PNGs at folder/NAME for each name, e.g. 'cat/0.png'."""
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (40 * i, 0, 200)).save(folder / name)


CLASS_IMAGES = [f"{label}/{i}.png" for label in ("cat", "dog") for i in range(2)]


def repeated_path_list(tmp_path: Path) -> List[str]:
    """A training list with a path listed twice, and a test list without."""
    write_images(tmp_path / "images", CLASS_IMAGES)
    listed = [{"path": f"images/{name}", "label": name.split("/")[0]} for name in CLASS_IMAGES]
    (tmp_path / "train.json").write_text(json.dumps(listed + listed[:1]))
    (tmp_path / "test.json").write_text(json.dumps(listed))
    return ["reader=json", f"reader.train={tmp_path / 'train.json'}", f"reader.test={tmp_path / 'test.json'}"]


def loose_file_folder(tmp_path: Path) -> List[str]:
    """A training folder with an image beside its class folders, and a test folder without."""
    write_images(tmp_path / "train", [*CLASS_IMAGES, "loose.png"])
    write_images(tmp_path / "test", CLASS_IMAGES)
    return ["reader=folder", f"reader.train={tmp_path / 'train'}", f"reader.test={tmp_path / 'test'}"]


@pytest.mark.parametrize("make, says", [(repeated_path_list, "listed more than once"),
                                        (loose_file_folder, "at the top level are not read")])
def test_a_training_list_warning_is_given_once_per_run(tmp_path, data_dir, caplog, make, says):
    from worklab.run.parts import Parts

    parts = Parts(compose(make(tmp_path), tmp_path / "run", data_dir), StopRequest(), one_device())
    with caplog.at_level(logging.WARNING, logger="worklab.data.imagelist"):
        parts.inputs.check_inputs()
    assert [says in r.getMessage() for r in caplog.records].count(True) == 1


def test_each_kind_of_network_is_described_by_its_architecture():
    from worklab.model.networks import describe

    nested = SimpleNamespace(name="network")  # the model's name for a nested body
    assert describe(NetworkConfig(kind="applications", arch="MobileNetV3Small", arch_args=ArchArgs(alpha=0.75)),
                    nested) == "MobileNetV3Small (applications, alpha=0.75)"
    assert describe(NetworkConfig(kind="applications", arch="MobileNetV2"), nested) == "MobileNetV2 (applications)"
    assert describe(NetworkConfig(depth=50, width=2, layout="slim"), SimpleNamespace(name="resnet50")) == \
        "ResNet-50 (resnet, width=2, layout=slim)"
    assert describe(NetworkConfig(kind="keras", path="m.keras"), SimpleNamespace(name="mine")) == \
        "mine from m.keras (keras)"
    assert describe(NetworkConfig(kind="saved_model", path="hub/model"), nested) == "hub/model (saved_model)"


def test_the_log_names_the_architecture_of_the_network(tmp_path, data_dir, caplog):
    from worklab.run.parts import Parts

    parts = Parts(compose([], tmp_path / "run", data_dir), StopRequest(), one_device())
    with caplog.at_level(logging.INFO, logger="worklab.run.parts"):
        parts.model
    assert "network: ResNet-10 (resnet, width=0.125, layout=resnet), 10 classes" in caplog.text


def fixed_logits_model(size: int, kernel: np.ndarray):
    """A network whose logits are the image's mean RGB times `kernel` (3 x classes): chosen logits for solid images."""
    import keras

    inputs = keras.Input((size, size, 3))
    logits = keras.layers.Dense(kernel.shape[1], use_bias=False, dtype="float32")(
        keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, logits)
    model.layers[-1].set_weights([kernel])
    return model


def test_predict_and_the_tester_take_a_confidently_wrong_loss_from_log_probabilities(tmp_path):
    from worklab.config.reader import ReaderConfig
    from worklab.data.reader import Reader
    from worklab.schedules.predict import ClassNames, Evaluation, classify_files
    from worklab.serve.export import Classifier
    from worklab.serve.predictions import LIST, Source
    from worklab.train.tester import Tester

    logits = np.array([[0.0, 110.0, -5.0], [0.0, 2.0, 0.0]])  # a red image labelled a, a green one labelled b
    kernel = np.zeros((3, 3), np.float32)
    kernel[:2] = logits / 255
    model = fixed_logits_model(8, kernel)
    paths = [str(tmp_path / "red.png"), str(tmp_path / "green.png")]
    for path, colour in zip(paths, [(255, 0, 0), (0, 255, 0)]):
        Image.new("RGB", (8, 8), colour).save(path)
    hand = -(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))[[0, 1], [0, 1]]  # -log_softmax[label]
    assert np.float32(np.exp(-hand[0])) == 0  # the red image's p(a), e^-110, underflows in float32

    reading = ReaderConfig(image_size=8, batch_size=2)
    dataset = Reader(reading, 0).test(ImageList("list.json", paths, [0, 1]))
    tester = Tester(model, dataset, 2, 2, top_k=1, strategy=one_device())
    classifier = Classifier(model, ["a", "b", "c"], reading, top_k=1)
    evaluation = Evaluation(Source("list.json", LIST, paths, ["a", "b"]), ClassNames(["a", "b", "c"]), top_k=1, worst=2)
    for index, output, _ in classify_files(lambda images: {k: v.numpy() for k, v in classifier.from_bytes(images).items()},
                                           paths, batch_size=2):
        evaluation.add(index, paths[index], output)
    predicted = evaluation.result()
    assert predicted["loss"] == pytest.approx(tester.evaluate()["loss"], rel=1e-5)
    assert predicted["loss"] == pytest.approx(hand.mean(), rel=1e-5)
