"""The landmark model in int8 (hands/quantize.py, `signs quantize-hand-models`): made from SIGNS training photos,
checked against its manifest whenever loaded, run by the finder, and a broken one never breaks the finder."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import SHARED, home_with_hand_models
from PIL import Image

from signs_resnet import cli
from signs_resnet.hands import detector, model_files
from signs_resnet.hands.model_files import CACHE_PART, INT8_MANIFEST, INT8_PART, LANDMARK_FILE, SHA256
from signs_resnet.training import train
from signs_resnet.training.config import TrainConfig

pytest.importorskip("nncf")  # the [quantize] extra

CALIBRATION_PHOTOS = 24  # a slice of the 1080: the same path, in seconds


@pytest.fixture(scope="module")
def int8_home(tmp_path_factory, signs_home):
    """A SIGNS_HOME with the fp32 hand models and the int8 landmark model made by the command from the first
    CALIBRATION_PHOTOS SIGNS training photos."""
    home = home_with_hand_models(tmp_path_factory.mktemp("int8-home"), signs_home)
    if not (SHARED / "signs").is_dir():
        pytest.skip("no SIGNS data to calibrate on")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNS_HOME", str(home))
        assert cli.main(["quantize-hand-models", "--photos", str(CALIBRATION_PHOTOS)]) == 0
        yield home


def _precisions(finder: detector.HandFinder) -> Counter:
    """The landmark model's operations by the precision OpenVINO runs them in."""
    runtime = finder._compiled["together"][1].get_runtime_model()
    return Counter(op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()
                   if "runtimePrecision" in op.get_rt_info())


def test_the_int8_landmark_model_runs_and_reads_the_hand_as_the_fp32_one_does(int8_home, sample_jpg, monkeypatch):
    monkeypatch.setenv("SIGNS_HOME", str(int8_home))
    manifest = json.loads((int8_home / CACHE_PART / INT8_PART / INT8_MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["landmark.bin", "landmark.xml"]
    assert manifest["made_from"] == {LANDMARK_FILE: SHA256[LANDMARK_FILE]}
    assert manifest["calibration"]["count"] == CALIBRATION_PHOTOS
    assert manifest["calibration"]["inputs"][LANDMARK_FILE] > CALIBRATION_PHOTOS // 2  # hands found in most

    int8, fp32 = detector.HandFinder(), detector.HandFinder(int8=False)
    assert (int8.int8, fp32.int8) == ((LANDMARK_FILE,), ())
    assert _precisions(int8)["i8"] > 10 and _precisions(fp32)["i8"] == 0  # int8 kernels, and only there

    photo = Image.open(sample_jpg).convert("RGB")
    photo.draft("RGB", (512, 512))
    hands = [finder.find(photo) for finder in (int8, fp32)]
    assert all(hand is not None for hand in hands)
    size = float(np.ptp(hands[1].points, axis=0).max())
    assert np.abs(hands[0].points - hands[1].points).max() < 0.05 * size  # the same points, within 5% of the hand
    assert hands[0].reading().count == hands[1].reading().count == 5  # an open hand


def test_a_changed_int8_model_is_refused_and_the_finder_runs_in_fp32(int8_home, signs_home, tmp_path, monkeypatch,
                                                                     caplog):
    home = home_with_hand_models(tmp_path / "home", signs_home)
    shutil.copytree(int8_home / CACHE_PART / INT8_PART, home / CACHE_PART / INT8_PART)
    monkeypatch.setenv("SIGNS_HOME", str(home))
    graph, weights = model_files.int8_models()[LANDMARK_FILE]
    assert weights == (home / CACHE_PART / INT8_PART / "landmark.bin").read_bytes() and b"<net" in graph

    weights = home / CACHE_PART / INT8_PART / "landmark.bin"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF
    weights.write_bytes(bytes(content))
    with pytest.raises(model_files.HandModelError, match="landmark.bin: missing or not the file its manifest names"):
        model_files.int8_models()
    with caplog.at_level(logging.WARNING, logger="signs_resnet.hands.detector"):
        finder = detector.HandFinder()
    assert finder.int8 == ()
    assert "the hand models run in fp32" in caplog.text and "quantize-hand-models --force" in caplog.text

    (home / CACHE_PART / INT8_PART / INT8_MANIFEST).write_text("{not json")
    with pytest.raises(model_files.HandModelError, match="int8.json: unreadable"):
        model_files.int8_models()


def test_an_int8_model_openvino_cannot_load_leaves_the_finder_in_fp32(int8_home, signs_home, tmp_path, monkeypatch,
                                                                      caplog):
    """Files that match their manifest but are no model (another OpenVINO's, say): fp32, and a warning."""
    home = home_with_hand_models(tmp_path / "home", signs_home)
    folder = home / CACHE_PART / INT8_PART
    shutil.copytree(int8_home / CACHE_PART / INT8_PART, folder)
    (folder / "landmark.xml").write_text("<net name='not a model'/>")
    manifest = json.loads((folder / INT8_MANIFEST).read_text())
    manifest["files"]["landmark.xml"] = hashlib.sha256((folder / "landmark.xml").read_bytes()).hexdigest()
    (folder / INT8_MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setenv("SIGNS_HOME", str(home))
    assert model_files.int8_models() is not None  # it checks out
    with caplog.at_level(logging.WARNING, logger="signs_resnet.hands.detector"):
        finder = detector.HandFinder()
    assert finder.int8 == () and "cannot load the int8 hand models" in caplog.text
    assert finder.find(Image.new("RGB", (256, 256))) is None  # and it searches


def test_training_never_runs_the_int8_model(int8_home, tmp_path, monkeypatch):
    """A seed trains the same model on every CPU: the process's finder in a training is the fp32 one, and the
    process's setting comes back when the training ends, however it ends."""
    monkeypatch.setenv("SIGNS_HOME", str(int8_home))
    detector._finder.cache_clear()  # a finder built before, from another SIGNS_HOME
    seen = []

    def training(config, context, device):  # what the finder is while fit() trains, then a failed training
        seen.append(detector.finder().int8)
        raise RuntimeError("stopped here")

    monkeypatch.setattr(train, "_fit", training)
    before = detector.use_int8(True)
    try:
        assert detector.finder().int8 == (LANDMARK_FILE,)
        with pytest.raises(RuntimeError, match="stopped here"):
            train.fit(TrainConfig(out=str(tmp_path / "run")))
        assert seen == [()] and detector.finder().int8 == (LANDMARK_FILE,)
    finally:
        detector.use_int8(before)
        detector._finder.cache_clear()


def test_the_command_leaves_made_models_alone_and_says_when_there_are_no_photos(int8_home, tmp_path, monkeypatch,
                                                                              capsys):
    monkeypatch.setenv("SIGNS_HOME", str(int8_home))
    made = {path.name: path.stat().st_mtime_ns for path in (int8_home / CACHE_PART / INT8_PART).iterdir()}
    assert cli.main(["quantize-hand-models"]) == 0
    assert "the int8 landmark model is there, SHA-256 checked" in capsys.readouterr().out
    for data, reason in ((tmp_path / "nowhere", "not a folder"), (SHARED / "real", "no train_signs.h5 or train_signs/")):
        assert cli.main(["quantize-hand-models", "--force", "--data", str(data)]) == 3  # `make run` goes on
        error = capsys.readouterr().err
        assert "no SIGNS training photos" in error and reason in error and "stay fp32" in error
    assert cli.main(["quantize-hand-models", "--force", "--photos", "0"]) == 2
    assert "--photos must be at least 1" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in (int8_home / CACHE_PART / INT8_PART).iterdir()} == made
