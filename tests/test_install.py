"""Installed as users install it: `pip install .` (not editable, from a copy of the sources as a wheel built from
git has them, without the hand models) into a fresh venv that does not see the system's packages, then
`signs fetch-hand-models` into $SIGNS_HOME and `signs predict sample.jpg`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # a fresh venv: a minute of pip


def test_a_plain_install_fetches_the_hand_models_and_answers_the_sample(tmp_path, sample_jpg, uniform_model_file):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns(
        "*.tflite", "__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNS_", "PYTHON", "VIRTUAL_ENV"))}
    environment |= {"SIGNS_HOME": str(tmp_path / "home")}

    def run(*command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path,
                              timeout=timeout, check=False)

    installed = run(str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", "-c",
                    str(ROOT / "constraints.txt"), str(source), timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    python = str(venv / "bin" / "python")
    lean = run(python, "-c", "import importlib.util as u; print([m for m in ('matplotlib', 'onnxruntime', "
                             "'onnxscript', 'tritonclient', 'signs_resnet') if u.find_spec(m)])")
    assert lean.stdout.strip() == "['signs_resnet']", lean.stdout + lean.stderr  # the extras stay out
    signs = str(venv / "bin" / "signs")

    model = uniform_model_file  # its answer is the hand's count alone: 5 only when the hand models work
    fetched = run(signs, "fetch-hand-models")
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "home" / "hand-models")) == ["hand_landmark_full.tflite",
                                                                     "palm_detection_full.tflite"]
    answered = run(signs, "predict", "--model", str(model), "--json", str(sample_jpg))
    assert answered.returncode == 0, answered.stderr[-2000:]
    [result] = json.loads(answered.stdout)
    assert (result["label"], result["hand"]["found"], result["hand"]["fingers"]) == ("5", True, 5)

    export = run(signs, "export", "--model", str(model))  # an extra the lean install does not have
    assert export.returncode == 2 and "pip install 'signs-resnet[export]'" in export.stderr, export.stderr
