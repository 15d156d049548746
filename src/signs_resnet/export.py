"""ONNX export of a trained model, and the parity check against PyTorch.

The exported graph is the whole prediction step: float32 images N x 3 x H x W scaled to [0, 1]
(what `data.prepare_image` returns) in; class probabilities N x classes (softmax with the model's
temperature) and the logits before it out. The classes, checksum and preprocessing travel in the
file's metadata.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import artifact
from .predict import LoadedModel, predict

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
# ONNX Runtime and PyTorch (both fp32) sum in different orders. Measured on SIGNS photos: probabilities
# agree to ~1e-6 and logits to ~1e-5 relative. The promises the parity check makes:
PARITY_TOLERANCE = 1e-4  # absolute, on probabilities
LOGITS_TOLERANCE = 1e-3  # relative to the largest logit (probabilities saturate; logits show any error)


class _Probabilities(torch.nn.Module):
    def __init__(self, network: torch.nn.Module, temperature: float):
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(images)
        return torch.softmax(logits / self.temperature, dim=1), logits


def probabilities_module(model: LoadedModel) -> torch.nn.Module:
    """The whole prediction step as one module: images -> (probabilities, logits)."""
    return _Probabilities(model.network, float(model.metadata.get("temperature", 1.0))).eval()


def export_onnx(model: LoadedModel) -> bytes:
    """The model as an ONNX file (bytes): `input` N x 3 x H x W float32 -> `probabilities`, `logits`."""
    height, width, channels = model.input_shape
    module = probabilities_module(model)
    example = torch.rand(2, channels, height, width)
    chatty = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in chatty]
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        for logger in chatty:
            logger.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                module, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME, LOGITS_NAME],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        finally:
            for logger, level in zip(chatty, levels):
                logger.setLevel(level)
    proto = program.model_proto
    metadata = {
        "classes": json.dumps(model.classes),
        "input_shape": json.dumps(list(model.input_shape)),
        "preprocessing": json.dumps(model.metadata.get("preprocessing", {})),
        "source_checksum": model.checksum,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def exported_or_export(model: LoadedModel) -> bytes:
    """The model's ONNX graph: the file `signs export` wrote beside it (model.onnx) when it was exported
    from this very model (same checksum), else a fresh in-memory export (several seconds)."""
    import onnx

    beside = Path(model.path).with_suffix(".onnx")
    if beside.is_file():
        try:
            proto = onnx.load(str(beside), load_external_data=False)
            source = {p.key: p.value for p in proto.metadata_props}.get("source_checksum")
        except Exception as error:  # noqa: BLE001 - any unreadable file is simply not used
            log.warning("ignoring %s: %s", beside, error)
            source = None
        if source == model.checksum:
            log.info("using %s", beside)
            return beside.read_bytes()
        log.info("ignoring %s: exported from another model", beside)
    log.info("exporting %s to ONNX in memory (run `signs export --model %s` to skip this)", model.path, model.path)
    return export_onnx(model)


def onnx_session(onnx_bytes: bytes | str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with every graph optimisation on (`threads` 0: one per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(onnx_bytes) if isinstance(onnx_bytes, Path) else onnx_bytes
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def parity(model: LoadedModel, session: Any, images: torch.Tensor) -> dict[str, float]:
    """How far ONNX Runtime is from PyTorch on `images`: the largest absolute difference of the
    probabilities, and of the logits relative to the largest logit."""
    expected_probabilities = predict(model, images).numpy()
    with torch.inference_mode():
        expected_logits = model.network(images.contiguous(memory_format=torch.channels_last)).numpy()
    probabilities, logits = session.run([OUTPUT_NAME, LOGITS_NAME], {INPUT_NAME: images.numpy()})
    scale = max(1.0, float(np.abs(expected_logits).max()))
    return {"probabilities": float(np.abs(expected_probabilities - probabilities).max()),
            "logits": float(np.abs(expected_logits - logits).max()) / scale}


def export(model: LoadedModel, out: str | Path, format: str = "onnx", check: bool = True) -> dict[str, Any]:
    """Write `model` to `out` atomically in `format`; with `check`, verify parity on random images first."""
    if format != "onnx":
        raise ValueError(f"unknown export format {format!r}; supported: onnx")
    onnx_bytes = export_onnx(model)
    result: dict[str, Any] = {"path": str(out), "format": format, "bytes": len(onnx_bytes)}
    if check:
        height, width, channels = model.input_shape
        images = torch.rand(8, channels, height, width, generator=torch.Generator().manual_seed(0))
        difference = parity(model, onnx_session(onnx_bytes), images)
        if difference["probabilities"] > PARITY_TOLERANCE or difference["logits"] > LOGITS_TOLERANCE:
            raise ValueError(f"ONNX export disagrees with PyTorch on random images: {difference} (tolerances: "
                             f"probabilities {PARITY_TOLERANCE:.0e}, logits {LOGITS_TOLERANCE:.0e}); not written")
        result["difference"] = difference
    artifact.atomic_write(out, onnx_bytes)
    log.info("wrote %s (%d bytes)", out, len(onnx_bytes))
    return result
