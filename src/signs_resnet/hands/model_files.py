"""The hand finder's two models, MediaPipe's (Apache-2.0): downloaded once from MediaPipe's wheel on PyPI into a
user cache folder ($SIGNS_HOME/hand-models, else the platform's), or found beside the package, and checked by
SHA-256 whenever loaded; and the landmark model's int8 version, when `signs quantize-hand-models` has made it
(hands/quantize.py), in that cache folder's int8/ with a manifest of SHA-256s, checked whenever loaded."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from signs_resnet import artifact, user_cache

PALM_FILE, LANDMARK_FILE = "palm_detection_full.tflite", "hand_landmark_full.tflite"
SHA256 = {PALM_FILE: "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
          LANDMARK_FILE: "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"}
# A copy beside the package (a checkout's, or one a packager put there) is used before the cache folder.
BESIDE = Path(__file__).resolve().parent / "models"
# Where they are published: this wheel of MediaPipe on PyPI (later ones no longer carry them); only the two files
# are taken from it, never installed. Any platform's copy holds the same files; this one is pinned by its hash.
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_URL = ("https://files.pythonhosted.org/packages/ad/83/56f760fecdc60de84c529d6c05c9dfc7d972617c6632bd254d5e021e5b16/"
             + WHEEL)
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
WHEEL_MEMBERS = {PALM_FILE: "mediapipe/modules/palm_detection/palm_detection_full.tflite",
                 LANDMARK_FILE: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}
FETCH = "run `signs fetch-hand-models`"
CACHE_PART = "hand-models"  # their folder in the user cache folder (user_cache.folder)
# The int8 models (OpenVINO IR: a graph and its weights each) and their manifest, written last: its SHA-256s
# name the files, and the fp32 models they were made from. Only the landmark model: the palm detector in int8
# read SIGNS' own photos worse (docs/robustness.md, "Levers measured").
INT8_PART, INT8_MANIFEST = "int8", "int8.json"
INT8_FILES = {LANDMARK_FILE: ("landmark.xml", "landmark.bin")}
INT8_MADE_FROM = {name: SHA256[name] for name in INT8_FILES}  # the manifest's "made_from"
QUANTIZE = "run `signs quantize-hand-models --force`"


class HandModelError(ValueError):
    """The hand models cannot be used (missing, changed, or refused by OpenVINO): a broken install, not a
    bad photo, so it is never reported as one."""


def verified(path: Path) -> Path:
    """`path` when it holds the model of its name, MediaPipe's byte for byte; else a HandModelError."""
    if not path.is_file():
        raise HandModelError(f"{path}: the hand model is missing ({FETCH})")
    if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256[path.name]:
        raise HandModelError(f"{path}: the hand model's SHA-256 is not MediaPipe's ({FETCH})")
    return path


def model_paths() -> dict[str, Path]:
    """The two models, verified: from $SIGNS_HOME/hand-models when SIGNS_HOME is set; else from beside the
    package when both are there, else from the platform's cache folder. Raises HandModelError naming what is
    wrong with the last place looked at when none has them."""
    if not os.environ.get("SIGNS_HOME") and all((BESIDE / name).is_file() for name in SHA256):
        try:
            return {name: verified(BESIDE / name) for name in SHA256}
        except HandModelError:
            pass  # a changed copy beside the package: the cache folder's, if it has them
    folder = user_cache.folder(CACHE_PART)
    return {name: verified(folder / name) for name in SHA256}


def int8_folder() -> Path:
    """Where `signs quantize-hand-models` writes the int8 models: the cache folder's int8/ (nothing created)."""
    return user_cache.folder(CACHE_PART) / INT8_PART


def int8_models() -> dict[str, tuple[bytes, bytes]] | None:
    """The int8 models by the fp32 model's name (INT8_FILES): each its graph's and its weights' bytes, those
    that were checked against the manifest (what the finder hands OpenVINO: never the files read again); None
    when none were made. Raises HandModelError when the manifest or a file does not check out (changed, cut
    short, or made from other models)."""
    folder = int8_folder()
    manifest_path = folder / INT8_MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files, made_from = manifest["files"], manifest["made_from"]
        if not isinstance(files, dict):
            raise TypeError("its files are not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HandModelError(f"{manifest_path}: unreadable ({error}); {QUANTIZE}") from None
    if made_from != INT8_MADE_FROM:
        raise HandModelError(f"{folder}: the int8 models were made from other hand models; {QUANTIZE}")
    contents = {}
    for name in (name for pair in INT8_FILES.values() for name in pair):
        path = folder / name
        contents[name] = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(contents[name]).hexdigest() != files.get(name):
            raise HandModelError(f"{path}: missing or not the file its manifest names; {QUANTIZE}")
    return {model: (contents[graph], contents[weights]) for model, (graph, weights) in INT8_FILES.items()}


def _extract(wheel: Path, folder: Path) -> None:
    """The two models out of MediaPipe's wheel into `folder`, each checked before it replaces a file there."""
    with zipfile.ZipFile(wheel) as archive:
        for name, member in WHEEL_MEMBERS.items():
            content = archive.read(member)
            if hashlib.sha256(content).hexdigest() != SHA256[name]:
                raise HandModelError(f"{wheel.name}: {member} is not the model this version expects")
            artifact.atomic_write(folder / name, content)


def _download(url: str, into: Path) -> None:
    """`url` into the file `into` (streamed; MediaPipe's wheel is about 35 MB), refused unless its SHA-256 is
    WHEEL_SHA256."""
    import httpx

    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response, into.open("wb") as file:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
                file.write(chunk)
    except httpx.HTTPError as error:
        raise HandModelError(f"cannot download {WHEEL} from PyPI for its hand models: {error}") from None
    if digest.hexdigest() != WHEEL_SHA256:
        raise HandModelError(f"{url}: the download is not {WHEEL} (SHA-256 {digest.hexdigest()[:12]}...)")


def fetch_hand_models() -> list[Path]:
    """Make sure both models are where the finder looks (model_paths) and are MediaPipe's: when they are,
    nothing is downloaded; otherwise MediaPipe's wheel is downloaded from PyPI (no pip needed), checked, and the
    two files taken from it into the cache folder. Raises HandModelError when that fails."""
    try:
        return list(model_paths().values())
    except HandModelError:
        pass
    folder = user_cache.folder(CACHE_PART)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as download:
            wheel = Path(download) / WHEEL
            _download(WHEEL_URL, wheel)
            _extract(wheel, folder)
    except OSError as error:
        raise HandModelError(f"cannot write the hand models into {folder}: {error}") from None
    return list(model_paths().values())
