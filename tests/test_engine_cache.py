"""The cache of OpenVINO's conversions (inference.openvino_cache): the first load of a model converts it and writes
an entry, later loads read it and answer the same; a damaged or foreign entry is converted again and replaced, another
model gets its own entry, and a cache folder that cannot be written still serves. Real conversions, real files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from signs_resnet.inference import openvino_cache
from signs_resnet.inference.engines import Engine, load_engine
from signs_resnet.inference.forward import predict
from signs_resnet.model_file import LoadedModel, load_model

CONVERTED, READ = "converted the PyTorch model", "read its cached conversion"


@dataclass
class FirstLoad:
    model: LoadedModel
    home: Path  # its SIGNS_HOME
    entry: Path
    images: torch.Tensor
    probabilities: torch.Tensor  # the engine's answer for `images`
    precision: str
    messages: list[str]  # what was logged


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def first_load(model_file, tmp_path_factory) -> FirstLoad:
    """The OpenVINO engine loaded once with an empty cache folder (its own SIGNS_HOME)."""
    home = tmp_path_factory.mktemp("home")
    recorder, logger = Recorder(), logging.getLogger("signs_resnet")
    level = logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SIGNS_HOME", str(home))
            model = load_model(model_file)
            engine = load_engine(model, "openvino")
            entry = openvino_cache.entry_folder(model)
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)
    images = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return FirstLoad(model, home, entry, images, engine.run(images), engine.precision,
                     [record.getMessage() for record in recorder.records])


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SIGNS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def cached_copy(first_load: FirstLoad, home: Path) -> Path:
    """The first load's entry copied into `home`; its folder there."""
    entry = home / first_load.entry.relative_to(first_load.home)
    shutil.copytree(first_load.entry, entry)
    return entry


def loaded(model: LoadedModel, caplog) -> tuple[Engine, list[str], list[logging.LogRecord]]:
    """The OpenVINO engine of `model`, the messages its loading logged and its warnings."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="signs_resnet"):
        engine = load_engine(model, "openvino")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    return engine, [r.getMessage() for r in caplog.records], warnings


def test_the_first_load_converts_and_writes_an_entry(first_load):
    assert any(CONVERTED in m and "cached it" in m for m in first_load.messages), first_load.messages
    assert not any(READ in m for m in first_load.messages)
    files = sorted(p.name for p in first_load.entry.iterdir())
    assert files == ["manifest.json", "model.bin", "model.xml"]
    manifest = json.loads((first_load.entry / "manifest.json").read_text())
    assert manifest["key"] == openvino_cache.key(first_load.model)
    assert manifest["key"]["checksum"] == first_load.model.checksum
    # nothing else in the cache folder: the temporary folder it was written in was renamed into place
    assert [p.name for p in first_load.entry.parent.iterdir()] == [first_load.entry.name]
    umask = os.umask(0)
    os.umask(umask)
    assert first_load.entry.stat().st_mode & 0o777 == 0o777 & ~umask  # readable by whoever may read the cache
    # the conversion computes the model: fp32 to float precision, bf16 (a CPU with AMX or AVX512-BF16) to its own
    tolerance = 1e-4 if first_load.precision == "fp32" else 3e-2
    torch.testing.assert_close(first_load.probabilities, predict(first_load.model, first_load.images),
                               rtol=0, atol=tolerance)


def test_a_second_load_reads_the_entry_and_answers_the_same(first_load, home, caplog):
    cached_copy(first_load, home)
    engine, messages, warnings = loaded(first_load.model, caplog)
    assert any(READ in m for m in messages) and not any(CONVERTED in m for m in messages), messages
    assert warnings == []
    torch.testing.assert_close(engine.run(first_load.images), first_load.probabilities, rtol=0, atol=1e-6)


def flip_bytes_in_the_weights(entry: Path) -> None:
    weights = bytearray((entry / "model.bin").read_bytes())
    middle = len(weights) // 2
    weights[middle:middle + 16] = bytes(b ^ 0xFF for b in weights[middle:middle + 16])
    (entry / "model.bin").write_bytes(bytes(weights))


def truncate_the_graph(entry: Path) -> None:
    (entry / "model.xml").write_bytes((entry / "model.xml").read_bytes()[:1000])


def remove_the_manifest(entry: Path) -> None:  # a partial entry
    (entry / "manifest.json").unlink()


def another_openvinos_manifest(entry: Path) -> None:  # a mismatched entry
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"]["openvino"] = "2020.1.0"
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [
    pytest.param(flip_bytes_in_the_weights, "model.bin is not the file", marks=pytest.mark.slow),
    pytest.param(truncate_the_graph, "model.xml is not the file", marks=pytest.mark.slow),
    pytest.param(remove_the_manifest, "No such file", marks=pytest.mark.slow),
    pytest.param(another_openvinos_manifest, "not this model's conversion", marks=pytest.mark.slow),
])
def test_a_damaged_entry_is_converted_again_and_replaced(first_load, home, caplog, damage, reason):
    entry = cached_copy(first_load, home)
    damage(entry)
    engine, messages, warnings = loaded(first_load.model, caplog)
    assert len(warnings) == 1 and reason in warnings[0].getMessage(), [w.getMessage() for w in warnings]
    assert any(CONVERTED in m and "cached it" in m for m in messages), messages
    torch.testing.assert_close(engine.run(first_load.images), first_load.probabilities, rtol=0, atol=1e-6)
    # replaced whole, nothing left aside: the next load reads it without a warning
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
    engine, messages, warnings = loaded(first_load.model, caplog)
    assert any(READ in m for m in messages) and warnings == [], messages


@pytest.mark.slow
def test_another_model_gets_its_own_entry(first_load, uniform_model_file, home, caplog):
    entry = cached_copy(first_load, home)
    manifest = (entry / "manifest.json").read_bytes()
    other = load_model(uniform_model_file)
    assert other.checksum != first_load.model.checksum
    engine, messages, warnings = loaded(other, caplog)
    assert any(CONVERTED in m for m in messages) and warnings == [], messages
    torch.testing.assert_close(engine.run(first_load.images), torch.full((5, 6), 1 / 6), rtol=0, atol=1e-5)
    assert sorted(p.name for p in entry.parent.iterdir()) == sorted([entry.name,
                                                                     openvino_cache.entry_folder(other).name])
    assert (entry / "manifest.json").read_bytes() == manifest  # the first model's entry untouched
    _, messages, _ = loaded(first_load.model, caplog)
    assert any(READ in m for m in messages), messages


def test_the_same_weights_with_other_metadata_or_another_conversion_are_other_entries(first_load, home,
                                                                                        monkeypatch):
    cached_copy(first_load, home)
    model = first_load.model
    assert openvino_cache.read(model) is not None
    recalibrated = LoadedModel(model.network, model.classes, model.input_shape,
                               model.metadata | {"temperature": 2.0}, model.checksum, model.path)
    assert openvino_cache.entry_folder(recalibrated) != openvino_cache.entry_folder(model)
    assert openvino_cache.read(recalibrated) is None  # the temperature is in the converted network
    monkeypatch.setattr(openvino_cache, "CONVERSION", openvino_cache.CONVERSION + 1)
    assert openvino_cache.read(model) is None


def test_a_writer_that_lost_the_race_keeps_the_entry_there(first_load, home):
    """A second process that converted the same model while the first wrote its entry: its rename fails, the entry
    there is sound and stays, and its own temporary folder goes."""
    entry = cached_copy(first_load, home)
    network = openvino_cache.read(first_load.model)
    before = entry.stat().st_ino
    assert openvino_cache.write(first_load.model, network) == entry
    assert entry.stat().st_ino == before and [p.name for p in entry.parent.iterdir()] == [entry.name]


def cache_folder_is_a_file(home: Path) -> None:
    home.mkdir()
    (home / "openvino").write_text("not a folder")


def read_only_cache_folder(home: Path) -> None:
    (home / "openvino").mkdir(parents=True)
    (home / "openvino").chmod(0o555)


@pytest.mark.parametrize("unwritable", [
    pytest.param(cache_folder_is_a_file, marks=pytest.mark.slow),
    pytest.param(read_only_cache_folder, marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root writes into a read-only folder; the file case covers it")),
])
def test_an_unwritable_cache_folder_still_serves(first_load, home, caplog, unwritable):
    unwritable(home)
    engine, messages, warnings = loaded(first_load.model, caplog)
    assert any(CONVERTED in m and "not cached" in m for m in messages), messages
    assert len(warnings) == 1 and "cannot cache the OpenVINO conversion" in warnings[0].getMessage()
    torch.testing.assert_close(engine.run(first_load.images), first_load.probabilities, rtol=0, atol=1e-6)
