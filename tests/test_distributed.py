"""Distributed data-parallel training: real `torchrun` with 2 CPU processes (gloo) on 32 photos, 2 epochs of 2 steps.

On CPU each process normalises batch norm over its own half of the global batch (PyTorch's SyncBatchNorm
needs GPUs), so the single-process reference computes batch norm the same way: over each process's half of
every batch (HalvedBatchNorm below). Everything else (the seeded shuffle and its shards, gradient averaging,
the learning-rate schedule, AdamW) must then agree to float rounding.
"""

import re
import shutil
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, command_environment

from signs_resnet import load_model
from signs_resnet.model import ResNet50Model
from signs_resnet.training import train
from signs_resnet.training.config import CHECKPOINT_FILE, TrainConfig
from signs_resnet.training.distributed import parameter_digest

pytestmark = pytest.mark.slow  # real torchrun process groups

PROCESSES = 2
OPTIONS = ["--epochs", 2, "--batch-size", 16, "--learning-rate", 1e-3, "--precision", "fp32", "--no-augment",
           "--no-progress", "--checkpoint-every-s", 0]
# Relative tolerance on the parameters after 4 AdamW steps. The runs compute the same sums in a different order
# (all-reduce of two halves vs one batch) and AdamW's first steps are about learning_rate * sign(gradient), so
# rounding can move a weight whose gradient is near zero by up to 2 * learning_rate. Measured on CPU: 0 to 1e-6.
# (Not a loose bound: one run with 2 threads against one with 1 thread already differs by ~0.7.)
TOLERANCE = 1e-3


def torchrun(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(PROCESSES),
               "-m", "signs_resnet", "train", *map(str, args)]
    environment = command_environment({"OMP_NUM_THREADS": "1"} | (env or {}))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


@pytest.fixture(scope="module")
def distributed_run(tiny_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    # PYTHONPROFILEIMPORTTIME: every process lists the modules it imports on stderr
    result = torchrun("--data", tiny_slice, "--out", out, *OPTIONS, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


class HalvedBatchNorm(ResNet50Model):
    """Single-process stand-in for 2 processes with their own batch norm: rank r's share of a global batch is
    its positions r::2 (the shards interleave the shared permutation), and each share is normalised alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shares = [ResNet50Model.forward(self, x[rank::PROCESSES]) for rank in range(PROCESSES)]
        return torch.stack(shares, 1).flatten(0, 1)  # back to the batch's order: interleaved


def fit_in_one_process(data_path, out, resume=False) -> None:
    """The same recipe in one thread of this process, batch norm over each process's half; keeps the epoch-1
    checkpoint as epoch-1.safetensors."""
    write_epoch_files = train._write_epoch_files

    def keep_epoch_one(folder, checkpoint, history):
        write_epoch_files(folder, checkpoint, history)
        if len(history) == 1:
            shutil.copy(folder / CHECKPOINT_FILE, folder / "epoch-1.safetensors")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process: another summation order changes AdamW's first steps
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            patch.delenv(variable, raising=False)
        patch.setattr(train, "ResNet50", HalvedBatchNorm)
        patch.setattr(train, "_write_epoch_files", keep_epoch_one)
        config = TrainConfig(data=str(data_path), out=str(out), epochs=2, batch_size=16, learning_rate=1e-3,
                                   precision="fp32", augment=False, progress=False, resume=resume,
                                   checkpoint_every_s=0)
        try:
            train.fit(config)
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_process_run(tiny_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    fit_in_one_process(tiny_slice, out)
    return out


def parameters(model_file) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_model(model_file).network.parameters()])


def test_parameters_are_identical_on_every_process(distributed_run):
    out, result = distributed_run
    line = re.search(r"parameters identical on all 2 processes: (\w+) (\w+)", result.stderr)
    assert line, result.stderr
    assert line[1] == line[2] == parameter_digest(load_model(out / "model.safetensors").network)


def test_gradients_are_laid_out_as_the_buckets_expect(distributed_run):
    _, result = distributed_run
    assert "grad strides do not match bucket view strides" not in result.stderr.lower()


def test_ranks_never_import_the_web_stack(distributed_run):
    _, result = distributed_run
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "signs_resnet.training.train" in imported and "torch.distributed" in imported  # the listing works
    web = sorted(name for name in imported if name.split(".")[0] in {"fastapi", "starlette", "uvicorn", "prometheus_client"})
    assert web == []


def test_only_rank_zero_writes_and_reports(distributed_run):
    out, result = distributed_run
    assert {"model.safetensors", "checkpoint.safetensors", "metrics.csv", "curves.png", "confusion.png"} <= {
        p.name for p in out.iterdir()}
    assert result.stderr.count("epoch 1/2") == 1 and result.stderr.count("epoch 2/2") == 1
    assert result.stdout.count("test accuracy:") == 1 and result.stdout.count("model:") == 1
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert load_model(out / "model.safetensors").metadata["training"]["processes"] == 2


def test_two_processes_match_one_process_with_the_same_global_batch(distributed_run, single_process_run):
    distributed_out, _ = distributed_run
    distributed_model = load_model(distributed_out / "model.safetensors")
    single_model = load_model(single_process_run / "model.safetensors")
    torch.manual_seed(0)  # fit's initialisation
    initial = torch.cat([p.detach().flatten() for p in ResNet50Model((64, 64, 3), 6).parameters()])
    distributed_parameters = parameters(distributed_out / "model.safetensors")
    single_parameters = parameters(single_process_run / "model.safetensors")
    # Training moved the weights far more than the tolerance, so the comparison means something.
    movement = float((single_parameters - initial).norm())
    assert movement > 0.01 * float(initial.norm())
    assert float((distributed_parameters - single_parameters).norm()) < TOLERANCE * movement
    for ours, reference in zip(distributed_model.metadata["history"], single_model.metadata["history"]):
        assert ours["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-4)
        assert ours["train_accuracy"] == reference["train_accuracy"]


def test_resume_continues_a_checkpoint(tiny_slice, single_process_run, tmp_path):
    """Rank 0 alone reads the checkpoint (written after epoch 1 of 2) and hands it to the other process."""
    shutil.copy(single_process_run / "epoch-1.safetensors", tmp_path / CHECKPOINT_FILE)
    result = torchrun("--data", tiny_slice, "--out", tmp_path, *OPTIONS, "--resume")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("after epoch 1") == 1
    assert "parameters identical on all 2 processes" in result.stderr  # rank 1 got the optimizer state too
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    # Against the same resume in one process.
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(single_process_run / "epoch-1.safetensors", single / CHECKPOINT_FILE)
    fit_in_one_process(tiny_slice, single, resume=True)
    resumed, reference = parameters(tmp_path / "model.safetensors"), parameters(single / "model.safetensors")
    assert float((resumed - reference).norm()) < TOLERANCE * float(reference.norm())


def test_one_failing_process_stops_all_promptly(tiny_slice, tmp_path):
    started = time.monotonic()
    result = torchrun("--data", tiny_slice, "--out", tmp_path, *OPTIONS, env={"SIGNS_FAIL_RANK": "1"}, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode != 0
    assert seconds < 90
    assert "SIGNS_FAIL_RANK=1: simulated failure in rank 1" in result.stderr
    assert "ChildFailedError" in result.stderr or "failed" in result.stderr.lower()
    assert not (tmp_path / "model.safetensors").exists()
