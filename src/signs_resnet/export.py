"""ONNX export of a trained model, and the parity check against PyTorch.

The exported graph is the whole prediction step: float32 images N x 3 x H x W scaled to [0, 1]
(what `data.prepare_image` returns) in, class probabilities N x classes out (softmax with the
model's temperature). The classes, checksum and preprocessing travel in the file's metadata.
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
# ONNX Runtime and PyTorch sum in different orders; on random inputs the probabilities of a trained
# ResNet50 agree to ~1e-6. This bound is the promise the parity check makes.
PARITY_TOLERANCE = 1e-4


class _Probabilities(torch.nn.Module):
    def __init__(self, network: torch.nn.Module, temperature: float):
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(images) / self.temperature, dim=1)


def export_onnx(model: LoadedModel) -> bytes:
    """The model as an ONNX file (bytes): `input` N x 3 x H x W float32 -> `probabilities` N x classes."""
    height, width, channels = model.input_shape
    module = _Probabilities(model.network, float(model.metadata.get("temperature", 1.0))).eval()
    example = torch.rand(2, channels, height, width)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        program = torch.onnx.export(
            module, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
        )
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


def onnx_session(onnx_bytes: bytes | str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with every graph optimisation on (`threads` 0: one per core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(onnx_bytes) if isinstance(onnx_bytes, Path) else onnx_bytes
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def parity(model: LoadedModel, session: Any, images: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's probabilities on `images`."""
    expected = predict(model, images).numpy()
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    return float(np.abs(expected - actual).max())


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
        if difference > PARITY_TOLERANCE:
            raise ValueError(f"ONNX export disagrees with PyTorch: max |difference| {difference:.2e} "
                             f"> {PARITY_TOLERANCE:.0e}; not written")
        result["max_difference"] = difference
    artifact.atomic_write(out, onnx_bytes)
    log.info("wrote %s (%d bytes)", out, len(onnx_bytes))
    return result
