"""benchmarks/serve_load.py end to end: our server and the same server from another source tree, posting a 64x64
SIGNS photo and a real one for half a second each; and its clear errors."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT, command_environment


def run_serve_load(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = command_environment()
    return subprocess.run([sys.executable, "benchmarks/serve_load.py", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=environment)


@pytest.mark.slow  # two server starts
def test_every_photo_is_measured_on_ours_and_on_another_tree(model_file):
    result = run_serve_load("--model", str(model_file), "--photos", "signs,crop", "--compare-tree", str(ROOT),
                            "--skip-baseline", "--concurrency", "1", "--grpc-concurrency", "", "--seconds", "0.5",
                            "--warmup", "0.2", "--runs", "1", "--serve-args", "--engine torch-fp32")
    assert result.returncode == 0, result.stderr
    table = result.stdout.partition("\nserver ")[2]
    assert table.splitlines()[0].split()[:3] == ["photo", "conc.", "req/s"]
    rows = re.findall(r"^(ours|tree:\S+)\s+(\w+)\s+1\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)$", table, re.M)
    assert [(server.partition(":")[0], photo) for server, photo, _, _ in rows] == [
        ("ours", "signs"), ("tree", "signs"), ("ours", "crop"), ("tree", "crop")]
    assert all(float(rps) > 0 and errors == "0" for _, _, rps, errors in rows), table


@pytest.mark.parametrize("args, message", [
    (["--photos", "signs,nope"], "no photo named 'nope'; the photos are signs, frame, crop, sample"),
    (["--image", "/no/such.jpg"], "--image /no/such.jpg: no such file"),
    (["--compare-tree", "/"], "--compare-tree /: no src/signs_resnet/ in it"),
])
def test_bad_options_are_clear_errors(args, message):
    result = run_serve_load(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
