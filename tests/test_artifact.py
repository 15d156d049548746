import pytest
import torch

from signs_resnet import artifact


def test_round_trip_of_nested_state(tmp_path):
    state = {"weights": {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor(3)}, "steps": [1, 2],
             "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]}}
    checksum = artifact.save(tmp_path / "x.safetensors", "checkpoint", state, {"note": "hi"})
    loaded, metadata, loaded_checksum = artifact.load(tmp_path / "x.safetensors", "checkpoint")
    assert torch.equal(loaded["weights"]["a"], state["weights"]["a"])
    assert loaded["optimizer"]["state"]["0"]["step"].item() == 5.0
    assert loaded["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.99]
    assert metadata == {"note": "hi"} and loaded_checksum == checksum


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.safetensors"
    artifact.save(path, "model", {"weights": {"w": torch.randn(100, 100)}}, {})
    return path


def test_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="model.safetensors: not a model file"):
        artifact.load(saved, "model")


def test_flipped_byte_is_caught_by_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        artifact.load(saved, "model")


def test_foreign_files_are_refused(tmp_path, saved):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a model file"):
        artifact.load(tmp_path / "notes.txt", "model")
    with pytest.raises(ValueError, match="is a model file, expected a checkpoint"):
        artifact.load(saved, "checkpoint")
    with pytest.raises(FileNotFoundError, match="missing"):
        artifact.load(tmp_path / "missing", "model")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    artifact.atomic_write(tmp_path / "a.bin", b"one")
    artifact.atomic_write(tmp_path / "a.bin", b"two")
    assert (tmp_path / "a.bin").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
