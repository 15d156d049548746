"""The hand finder's two models, MediaPipe's (Apache-2.0): fetched once from its wheel on PyPI, and checked by
SHA-256 whenever loaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = Path(__file__).resolve().parent / "models"  # the two .tflite files are fetched, not in git
PALM_MODEL = MODELS / "palm_detection_full.tflite"
LANDMARK_MODEL = MODELS / "hand_landmark_full.tflite"
SHA256 = {PALM_MODEL.name: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
          LANDMARK_MODEL.name: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"}
# Where they are published: this wheel of MediaPipe on PyPI (later ones no longer carry them), any platform's
# copy holding the same files; only the two files are taken from it, never installed.
WHEEL = ["mediapipe==0.10.21", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311"]
WHEEL_MEMBERS = {PALM_MODEL.name: "mediapipe/modules/palm_detection/palm_detection_full.tflite",
                 LANDMARK_MODEL.name: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}


class HandModelError(ValueError):
    """The hand models cannot be used (missing, changed, or refused by OpenVINO): a broken install, not a
    bad photo, so it is never reported as one."""


def _verified(path: Path) -> Path:
    if not path.is_file():
        raise HandModelError(f"{path}: the hand model is missing (run `signs fetch-hand-models`)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256[path.name]:
        raise HandModelError(f"{path}: the hand model's SHA-256 is not MediaPipe's (run `signs fetch-hand-models`)")
    return path


def _extract(wheel: Path, folder: Path) -> None:
    """The two models out of MediaPipe's wheel into `folder`, each checked before it replaces a file there."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, member in WHEEL_MEMBERS.items():
            content = archive.read(member)
            if hashlib.sha256(content).hexdigest() != SHA256[name]:
                raise HandModelError(f"{wheel.name}: {member} is not the model this version expects")
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as temporary:
                temporary.write(content)
            os.replace(temporary.name, folder / name)


def fetch_hand_models() -> list[Path]:
    """Make sure both models are in MODELS and are MediaPipe's: when they are, nothing is downloaded;
    otherwise MediaPipe's wheel is downloaded from PyPI (about 35 MB, with pip, not installed) and the two
    files taken from it. Raises HandModelError when that fails."""
    paths = [PALM_MODEL, LANDMARK_MODEL]
    try:
        return [_verified(path) for path in paths]
    except HandModelError:
        pass
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", download, *WHEEL]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(download).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise HandModelError(f"cannot download {WHEEL[0]} from PyPI for its hand models: {reason}")
        _extract(wheels[0], MODELS)
    return [_verified(path) for path in paths]
