"""The landmark model in int8: OpenVINO's post-training quantization (NNCF), calibrated on SIGNS training photos
only, never on `real/`. `signs quantize-hand-models` runs it (`make run` does); the finder uses the result once
it is there and checks out (model_files.int8_models). The palm detector stays fp32: in int8 it read SIGNS' own
photos worse. Figures: docs/robustness.md, "Levers measured"."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from signs_resnet import artifact
from signs_resnet.extras import require
from signs_resnet.hands.model_files import (INT8_FILES, INT8_MADE_FROM, INT8_MANIFEST, LANDMARK_FILE, PALM_FILE,
                                            HandModelError, int8_folder, int8_models, model_paths)

log = logging.getLogger(__name__)

ENLARGE = 4  # a 64x64 SIGNS photo enlarged to 256x256 before the search, as the finder sees real photos
# The landmark model's matrix products stay in float: quantized, the fingers' reading lost 5 points on real/.
KEEP_FLOAT = {LANDMARK_FILE: ("MatMul",)}


def calibration_inputs(photos: np.ndarray) -> dict[str, list[np.ndarray]]:
    """The inputs of each model of INT8_FILES from a search of each photo (N x 3 x H x W uint8, SIGNS'),
    enlarged ENLARGE times, by the fp32 finder: what the int8 models are calibrated on, kept as the uint8
    pixels they are made of (each input is pixels / 255), a sixth of the memory."""
    from signs_resnet.hands.detector import HandFinder

    finder = HandFinder(int8=False)
    inputs: dict[str, list[np.ndarray]] = {name: [] for name in INT8_FILES}
    for pixels in photos:
        photo = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
        photo = photo.resize((photo.width * ENLARGE, photo.height * ENLARGE), Image.Resampling.BICUBIC)
        for name, fed in zip((PALM_FILE, LANDMARK_FILE), finder.model_inputs(photo)):
            if name in inputs:
                inputs[name] += [np.round(tensor[0] * 255).astype(np.uint8) for tensor in fed]
    return inputs


def quantize_hand_models(photos: np.ndarray, source: str) -> dict:
    """Quantize the hand models of INT8_FILES on `photos` (calibration_inputs) and write them, then their
    manifest, into int8_folder(), each file atomically; the manifest, which `source` names the photos of, is
    returned. The old manifest goes once the new models are made: until the new one is written, the finder runs
    in fp32."""
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's switch for its usage telemetry (off): nothing leaves the machine
    nncf = require("nncf", "quantizing the hand models")
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-operation notes; its progress bars stay
    inputs = calibration_inputs(photos)
    if not inputs[LANDMARK_FILE]:
        raise ValueError(f"{source}: no hand found in any of its {len(photos)} photos to calibrate on")
    core, paths, folder = ov.Core(), model_paths(), int8_folder()
    made: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for model_file, (graph, weights) in INT8_FILES.items():
            ignored = nncf.IgnoredScope(types=list(KEEP_FLOAT[model_file]))
            dataset = nncf.Dataset(inputs[model_file], lambda pixels: (pixels.astype(np.float32) / 255)[None])
            quantized = nncf.quantize(core.read_model(str(paths[model_file])), dataset,
                                      subset_size=len(inputs[model_file]), ignored_scope=ignored)
            ov.save_model(quantized, str(Path(scratch) / graph), compress_to_fp16=False)
            made |= {name: (Path(scratch) / name).read_bytes() for name in (graph, weights)}
    (folder / INT8_MANIFEST).unlink(missing_ok=True)  # from here until the new one, the finder runs fp32
    for name, content in made.items():
        artifact.atomic_write(folder / name, content)
    files = {name: hashlib.sha256(content).hexdigest() for name, content in made.items()}
    manifest = {"files": files, "made_from": INT8_MADE_FROM, "calibration": {
        "photos": source, "count": len(photos), "enlarged": ENLARGE,
        "inputs": {name: len(inputs[name]) for name in INT8_FILES}},
        "kept_float": {name: list(KEEP_FLOAT[name]) for name in INT8_FILES},
        "nncf": nncf.__version__, "openvino": ov.__version__,
        "made": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    artifact.atomic_write(folder / INT8_MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def already_made() -> bool:
    """Whether the int8 models are there and check out against their manifest; why not, logged, when they are
    there but do not."""
    try:
        return int8_models() is not None
    except HandModelError as error:
        log.warning("%s", error)
        return False
