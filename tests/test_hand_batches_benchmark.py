"""benchmarks/hand_batches.py end to end: the real hand models reshaped to each batch and timed."""

import subprocess
import sys

import pytest
from conftest import ROOT, command_environment

from signs_resnet.hands.model_files import HandModelError, model_paths


def run_hand_batches(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/hand_batches.py", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=command_environment())


def test_every_model_is_timed_at_every_batch(signs_home):
    try:
        model_paths()
    except HandModelError:
        pytest.skip("the hand models are not installed (`signs fetch-hand-models`)")
    result = run_hand_batches("--rounds", "1", "--images", "4")
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = [line.split("|")[1:-1] for line in table[1:] if ":---" not in line]  # under the header
    assert [row[0].strip() for row in rows] == ["palm detector, fp32", "landmark model, fp32"]  # no int8 made here
    for row in rows:
        times = [float(cell) for cell in row[1:4]]
        assert all(0 < time < 5000 for time in times), row
        assert abs(float(row[4].strip().rstrip("×")) - times[2] / times[0]) <= 0.011  # from unrounded medians


def test_bad_settings_are_one_line():
    result = run_hand_batches("--images", "6")
    assert result.returncode == 2 and "positive multiple of 4" in result.stderr and "Traceback" not in result.stderr
