"""A real training subprocess, killed or interrupted mid-run, resumes to exactly the result of an uninterrupted run."""

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from signs_resnet import artifact, load_model
from signs_resnet.training.config import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, TrainConfig
from signs_resnet.training.train import _check_resumable

EPOCHS = 4  # the interrupted runs stop during epoch 2; two more keep them from finishing first on a loaded machine


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "signs_resnet", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(EPOCHS), "--batch-size", "16", "--no-progress", "--checkpoint-every-s", "0", *extra]


def train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(data, out, *extra), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def start_and_wait_for_epoch(data: Path, out: Path, epoch: int) -> subprocess.Popen:
    """Start training; return once the checkpoint after `epoch` is on disk (metrics.csv is written after it)."""
    # As from a terminal: a shell without job control starts background commands with SIGINT ignored, and
    # the test runner may be one; Ctrl-C reaches a user's training with the default disposition.
    process = subprocess.Popen(train_command(data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        metrics = out / METRICS_FILE
        if metrics.exists() and len(metrics.read_text().splitlines()) > epoch:
            return process
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint after epoch {epoch} within 240 s")


@pytest.fixture(scope="module")
def uninterrupted(tiny_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(tiny_slice, out)
    return load_model(out / MODEL_FILE)


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_model(tiny_slice, tmp_path, uninterrupted):
    process = start_and_wait_for_epoch(tiny_slice, tmp_path, 1)
    process.kill()  # SIGKILL in the middle of epoch 2: no chance to clean up
    process.communicate()
    state, _, _ = artifact.load(tmp_path / CHECKPOINT_FILE, "checkpoint")
    assert 1 <= state["epoch"] < EPOCHS

    result = train(tiny_slice, tmp_path, "--resume")
    assert f"resuming from {tmp_path / CHECKPOINT_FILE} after epoch {state['epoch']}" in result.stderr
    resumed = load_model(tmp_path / MODEL_FILE)
    assert resumed.checksum == uninterrupted.checksum  # the same weights, bit for bit
    assert [row["train_loss"] for row in resumed.metadata["history"]] == [
        row["train_loss"] for row in uninterrupted.metadata["history"]]
    assert len((tmp_path / METRICS_FILE).read_text().splitlines()) == EPOCHS + 1


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_after_the_checkpoint_and_resumes(tiny_slice, tmp_path, uninterrupted):
    process = start_and_wait_for_epoch(tiny_slice, tmp_path, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "signs train: interrupted: the checkpoint after epoch" in stderr and "continue with --resume" in stderr
    assert not (tmp_path / MODEL_FILE).exists()
    state, _, _ = artifact.load(tmp_path / CHECKPOINT_FILE, "checkpoint")  # complete and verified
    assert f"after epoch {state['epoch']} " in stderr

    train(tiny_slice, tmp_path, "--resume")
    assert load_model(tmp_path / MODEL_FILE).checksum == uninterrupted.checksum


@pytest.mark.slow
def test_resume_refuses_a_corrupt_checkpoint_naming_it(tiny_slice, tmp_path):
    checkpoint = tmp_path / CHECKPOINT_FILE
    checkpoint.write_bytes(b"\0" * 1000)
    result = subprocess.run(train_command(tiny_slice, tmp_path, "--resume"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{checkpoint}: not a checkpoint file" in result.stderr
    assert checkpoint.read_bytes() == b"\0" * 1000  # left for the user to inspect, not overwritten


def test_a_checkpoint_from_before_a_new_setting_resumes_and_a_changed_setting_is_refused(tmp_path):
    saved = dataclasses.asdict(TrainConfig())
    del saved["thumbless_probability"]  # written before the field existed: it had its default then
    _check_resumable(saved, TrainConfig(), tmp_path)
    with pytest.raises(ValueError, match=r"different settings \(thumbless_probability\)"):
        _check_resumable(saved, TrainConfig(thumbless_probability=0.5), tmp_path)
    with pytest.raises(ValueError, match=r"different settings \(seed\)"):
        _check_resumable(saved, TrainConfig(seed=1), tmp_path)


def test_a_checkpoint_with_a_retired_setting_resumes_only_where_that_setting_was_off(tmp_path):
    """Settings retired since (they were measured not to pay) were off by default: a checkpoint written with one
    off resumes; one written with it on is refused, naming it, rather than resumed as if it had been off."""
    saved = dataclasses.asdict(TrainConfig()) | {"skin_probability": 0.0, "cut_out_probability": 0.0}
    _check_resumable(saved, TrainConfig(), tmp_path)
    with pytest.raises(ValueError, match=r"settings this version no longer has \(skin_probability=0.6\)"):
        _check_resumable(saved | {"skin_probability": 0.6}, TrainConfig(), tmp_path)
