"""The compiled hand models kept in the cache folder (hands/compiled_cache.py): a second start imports what the
first compiled and finds the same hands; a damaged, foreign or refused entry is compiled again and replaced; a
folder that cannot be written costs the start-up time, never the finder."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import openvino as ov
import pytest
from conftest import home_with_hand_models
from PIL import Image

from signs_resnet.hands import compiled_cache, detector
from signs_resnet.hands.model_files import CACHE_PART, PALM_FILE, SHA256, model_paths

OPTIONS = detector.compile_options(1, 1)


@pytest.fixture
def home(tmp_path, signs_home, monkeypatch):
    """A SIGNS_HOME of its own: the fp32 hand models, no int8 model, no compiled model yet."""
    home = home_with_hand_models(tmp_path / "home", signs_home)
    monkeypatch.setenv("SIGNS_HOME", str(home))
    return home


def entries(home) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (home / CACHE_PART / compiled_cache.PART).glob("*.blob")}


def files(home) -> dict[str, int]:
    """Each entry's inode: an entry written again is a new file renamed into place."""
    return {path.name: path.stat().st_ino for path in (home / CACHE_PART / compiled_cache.PART).glob("*.blob")}


def palm(core: ov.Core):
    return core.read_model(str(model_paths()[PALM_FILE]))


def outputs(compiled) -> list[np.ndarray]:
    image = np.random.default_rng(0).random(tuple(compiled.input(0).shape), dtype=np.float32)
    return list(compiled.create_infer_request().infer([image]).values())


def test_a_second_start_imports_what_the_first_compiled_and_finds_the_same_hand(home, sample_jpg):
    photo = Image.open(sample_jpg).convert("RGB")
    first = detector.HandFinder(int8=False)
    written, inodes = entries(home), files(home)
    assert len(written) == 2 * len(first._compiled)  # each model, each way
    umask = os.umask(0)
    os.umask(umask)
    for name, blob in written.items():
        header = json.loads(blob.partition(b"\n")[0])
        assert header["key"]["model_sha256"] in SHA256.values() and header["key"]["openvino"] == ov.get_version()
        mode = (home / CACHE_PART / compiled_cache.PART / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~umask  # an ordinary file, readable by whoever may read the cache folder
    second = detector.HandFinder(int8=False)
    assert files(home) == inodes and entries(home) == written  # imported: compiling writes the entry again
    for way, models in first._compiled.items():  # every output of every model, each way, bit for bit
        for compiled, imported in zip(models, second._compiled[way]):
            assert all(np.array_equal(a, b) for a, b in zip(outputs(compiled), outputs(imported), strict=True))
    hands = [finder.find(photo) for finder in (first, second)]
    assert hands[0] is not None and np.array_equal(hands[0].points, hands[1].points)
    assert hands[0].score == hands[1].score


def _flip_a_byte(blob: bytes) -> bytes:
    return blob[:-100] + bytes([blob[-100] ^ 1]) + blob[-99:]


def _another_models(blob: bytes) -> bytes:
    header, _, rest = blob.partition(b"\n")
    manifest = json.loads(header)
    manifest["key"]["model_sha256"] = "0" * 64
    return json.dumps(manifest).encode() + b"\n" + rest


def _refused_by_openvino(blob: bytes) -> bytes:
    """Bytes OpenVINO cannot import, under a header that checks out."""
    header, _, _ = blob.partition(b"\n")
    manifest, garbage = json.loads(header), b"not a compiled model" * 100
    manifest["sha256"] = compiled_cache._digest(garbage)
    return json.dumps(manifest).encode() + b"\n" + garbage


@pytest.mark.parametrize("damage", [_flip_a_byte, lambda blob: blob[: len(blob) // 2], lambda blob: b"{not json",
                                    _another_models, _refused_by_openvino],
                         ids=["a byte flipped", "cut short", "no header", "another model's", "refused by OpenVINO"])
def test_a_damaged_foreign_or_refused_entry_is_compiled_again_and_replaced(home, damage, caplog):
    core = ov.Core()
    expected = outputs(compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], OPTIONS))
    [(name, sound)] = entries(home).items()
    (home / CACHE_PART / compiled_cache.PART / name).write_bytes(damage(sound))
    with caplog.at_level(logging.WARNING, logger=compiled_cache.__name__):
        compiled = compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], OPTIONS)
    assert "compiling it again" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(outputs(compiled), expected))
    replaced, inodes = entries(home)[name], files(home)
    assert json.loads(replaced.partition(b"\n")[0])["key"] == json.loads(sound.partition(b"\n")[0])["key"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=compiled_cache.__name__):
        compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], OPTIONS)
    assert caplog.text == "" and files(home) == inodes  # imported, not compiled again


def test_a_cache_folder_that_cannot_be_written_still_compiles(home, caplog):
    (home / CACHE_PART / compiled_cache.PART).write_text("a file where the folder would be")
    core = ov.Core()
    with caplog.at_level(logging.WARNING, logger=compiled_cache.__name__):
        compiled = compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], OPTIONS)
    assert len(outputs(compiled)) == 2 and "the next start compiles it again" in caplog.text


def test_other_settings_or_another_model_get_their_own_entry(home):
    core = ov.Core()
    compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], OPTIONS)
    compiled_cache.compile_model(core, palm(core), SHA256[PALM_FILE], detector.compile_options(1, 2))
    compiled_cache.compile_model(core, palm(core), "1" * 64, OPTIONS)
    assert len(entries(home)) == 3
