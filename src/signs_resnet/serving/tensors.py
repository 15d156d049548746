"""The Open Inference Protocol's tensors, whichever way they travel: the model's inputs and outputs as the
protocol describes them, a request's input checked and turned into images, and the answer's outputs.
kserve.py (REST: JSON, and the binary tensor data extension) and grpc_service.py (gRPC) read their
carriers into `InputTensor`s and hand them here, so each check is made once, with one message.

    "input" FP32 [N, 3, 64, 64]: images already prepared (preprocess.prepare_image: RGB scaled to [0, 1])
    "image" BYTES [N]: image files (JPEG, PNG, ...), prepared here exactly as /predict does (the hand found)
 -> "probabilities" FP32 [N, classes] (for "image" files, the network's combined with the hand's reading,
    as /predict's are: answer.decide, docs/robustness.md, "The combination"; for "input", the network's
    own), "label" BYTES [N] and "confident" BOOL [N] (a hand was found, its reading counts the label's
    fingers and the top probability reaches the model's confidence threshold:
    answer.is_confident, docs/accuracy.md, "Confidence"), and the two parts the answer combines, so that a
    client sees why: "network" FP32 [N, classes] (the network's own probabilities) and "hand_counts" FP32 [N, 6]
    (the hand's reading: the probability of each count of fingers 0-5; all 0 where no hand was read)

A tensor's data comes as the carrier has it: a list (JSON `data`: numbers, or base64 strings for BYTES;
gRPC `contents`: numbers, or bytes), or in binary form (REST's binary extension, gRPC's
raw_input_contents): FP32 as little-endian 4-byte floats, BYTES as each element's length (4 bytes,
little-endian) followed by its bytes.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from signs_resnet.answer import decide
from signs_resnet.data.decoding import ImageError
from signs_resnet.data.preprocess import Framing, prepare
from signs_resnet.hands.model_files import HandModelError
from signs_resnet.inference.engines import Engine
from signs_resnet.model_file import LoadedModel
from signs_resnet.serving.errors import ApiError, decode_error
from signs_resnet.serving.settings import ServeSettings

INPUTS = {"input": "FP32", "image": "BYTES"}
OUTPUTS = ("probabilities", "label", "confident", "network", "hand_counts")
LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: Sequence[Any] | None = None  # the elements as a list, in the carrier's own form
    raw: bytes | None = None  # or the binary form


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]  # FP32: floats, row-major; BYTES: strings; BOOL: booleans

    def raw(self) -> bytes:
        """The tensor in binary form."""
        if self.datatype == "BYTES":
            return join_bytes([value.encode() for value in self.values])
        if self.datatype == "BOOL":
            return bytes(map(bool, self.values))  # one byte each
        return np.asarray(self.values, dtype="<f4").tobytes()


def model_metadata(engine: Engine) -> dict[str, Any]:
    """The model's inputs and outputs, as both carriers describe them."""
    height, width, channels = engine.model.input_shape
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, channels, height, width]},
                   {"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(engine.model.classes)]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "confident", "datatype": "BOOL", "shape": [-1]},
                    {"name": "network", "datatype": "FP32", "shape": [-1, len(engine.model.classes)]},
                    {"name": "hand_counts", "datatype": "FP32", "shape": [-1, 6]}],
    }


def check_outputs(requested: Sequence[str]) -> None:
    unknown = [name for name in requested if name not in OUTPUTS]
    if unknown:
        raise ApiError(400, "unknown_output", f"unknown outputs {unknown}; outputs: {', '.join(OUTPUTS)}")


def images_of(inputs: Sequence[InputTensor], engine: Engine,
              settings: ServeSettings) -> tuple[torch.Tensor, list[Framing]]:
    """The request's one input as prepared images N x 3 x H x W, and for each where its hand was found
    (preprocess.Framing; FP32 images were framed by the client, so not looked for); ApiError 400 (413 past max_images or
    max_pixels) when it is not one the model takes. Counts are checked before any data is decoded."""
    if len(inputs) != 1:
        raise ApiError(400, "invalid_request", "send exactly one input: 'input' (FP32) or 'image' (BYTES)")
    tensor = inputs[0]
    height, width, channels = engine.model.input_shape
    if tensor.datatype == "FP32":
        expected = [channels, height, width]
        if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
            raise ApiError(400, "invalid_shape", f"FP32 input must have shape [N, {channels}, {height}, {width}], "
                                                 f"got {tensor.shape}")
        _check_count(tensor.shape[0], settings)
        values = _fp32_values(tensor)
        if values.size != math.prod(tensor.shape):
            raise ApiError(400, "invalid_shape", f"shape {tensor.shape} needs {math.prod(tensor.shape)} values, "
                                                 f"got {values.size}")
        if not np.isfinite(values).all():
            raise ApiError(400, "invalid_data", "FP32 data must be finite numbers")
        return torch.from_numpy(values.reshape(tensor.shape).copy()), [Framing()] * tensor.shape[0]
    if tensor.datatype == "BYTES":
        if not tensor.shape or min(tensor.shape) < 1:
            raise ApiError(400, "invalid_shape", f"BYTES input must have a shape of positive sizes, got {tensor.shape}")
        count = math.prod(tensor.shape)
        _check_count(count, settings)  # before the elements are split or decoded
        files = _byte_elements(tensor)
        if len(files) != count or not files:
            raise ApiError(400, "invalid_shape", f"shape {tensor.shape} does not match {len(files)} images")
        return prepare_images(files, height, settings.max_pixels)
    raise ApiError(400, "invalid_datatype", f"datatype must be FP32 or BYTES, got {tensor.datatype!r}")


def prepare_images(sources: Sequence[bytes | Image.Image], size: int, max_pixels: int,
                   names: Sequence[str | None] | None = None,
                   previous: Sequence[Sequence[tuple[float, float]] | None] | None = None,
                   ) -> tuple[torch.Tensor, list[Framing]]:
    """A request's images through preprocess.prepare, as /predict and the v2 "image" input both take them: the
    batch N x 3 x size x size and where each one's hand was found; the first that does not decode is the API
    error naming it (its index, and its name when it has one). `previous`: for each image, the hand's points in
    the frame before it (a stream's), where its hand is looked for first."""
    images, framings = [], []
    for index, source in enumerate(sources):
        try:
            image, framing = prepare(source, size, max_pixels, previous[index] if previous else None)
        except ImageError as error:
            raise decode_error(index, names[index] if names else None, error) from None
        except HandModelError:  # the install, not the photo (said in the log at start-up): the same for every photo
            raise ApiError(503, "hand_models_missing", f"this server has no hand models, which photos larger than "
                           f"{size}x{size} need (its operator can run `signs fetch-hand-models`); send image "
                           f"tensors or {size}x{size} photos meanwhile") from None
        images.append(image)
        framings.append(framing)
    return torch.stack(images), framings


def output_tensors(rows: list[list[float]], model: LoadedModel, requested: Sequence[str],
                   framings: Sequence[Framing]) -> list[OutputTensor]:
    """The requested outputs (all when none are) of the batch's rows of probabilities; `framings`: where
    each image's hand was found (images_of), whose reading is combined with each row (answer.decide)."""
    answers = [decide(model, row, framing) for row, framing in zip(rows, framings)]
    tensors = {"probabilities": OutputTensor("probabilities", "FP32", [len(rows), len(model.classes)],
                                             [value for given in answers for value in given.probabilities]),
               "label": OutputTensor("label", "BYTES", [len(rows)], [given.label for given in answers]),
               "confident": OutputTensor("confident", "BOOL", [len(rows)], [given.confident for given in answers]),
               "network": OutputTensor("network", "FP32", [len(rows), len(model.classes)],
                                       [value for row in rows for value in row]),
               "hand_counts": OutputTensor("hand_counts", "FP32", [len(rows), 6],
                                           [value for framing in framings
                                            for value in (framing.reading.counts if framing.reading else [0.0] * 6)])}
    return [tensors[name] for name in requested or OUTPUTS]


def split_bytes(raw: bytes, name: str) -> list[bytes]:
    """The elements of a BYTES tensor in binary form; ApiError 400 when the lengths do not add up."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + LENGTH.size > len(raw):
            raise ApiError(400, "invalid_data", f"input {name!r}: BYTES data ends inside the length of element "
                                                f"{len(elements) + 1}")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += LENGTH.size
        if offset + length > len(raw):
            raise ApiError(400, "invalid_data", f"input {name!r}: BYTES element {len(elements) + 1} claims "
                                                f"{length} bytes, {len(raw) - offset} are left")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def join_bytes(elements: Sequence[bytes]) -> bytes:
    """A BYTES tensor in binary form."""
    return b"".join(LENGTH.pack(len(element)) + element for element in elements)


def claimed_images(inputs: Sequence[InputTensor]) -> int:
    """How many images a request's one input says it holds (its shape; 1 when unclear), for the batcher's
    early capacity check, before the data is read."""
    if len(inputs) != 1 or not inputs[0].shape or min(inputs[0].shape) < 1:
        return 1
    tensor = inputs[0]
    return tensor.shape[0] if tensor.datatype == "FP32" else math.prod(tensor.shape)


def _check_count(count: int, settings: ServeSettings) -> None:
    if count > settings.max_images:
        raise ApiError(413, "too_many_images", f"at most {settings.max_images} images per request")


def _check_one_form(tensor: InputTensor) -> None:
    if tensor.data is not None and tensor.raw is not None:
        raise ApiError(400, "invalid_request", f"input {tensor.name!r}: send its data once, as a list or in "
                                               "binary form, not both")
    if tensor.data is None and tensor.raw is None:
        raise ApiError(400, "invalid_request", f"input {tensor.name!r} has no data")


def _fp32_values(tensor: InputTensor) -> np.ndarray:
    _check_one_form(tensor)
    if tensor.raw is not None:
        if len(tensor.raw) % 4:
            raise ApiError(400, "invalid_shape", f"input {tensor.name!r}: {len(tensor.raw)} bytes of FP32 data is "
                                                 "not a whole number of 4-byte values")
        return np.frombuffer(tensor.raw, dtype="<f4").astype(np.float32)
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError):
        values = None
    if values is None or values.dtype.kind not in "iuf":  # numbers, not strings or booleans made numbers
        raise ApiError(400, "invalid_data", "FP32 data must be numbers (flat or nested lists)")
    return values.astype(np.float32)


def _byte_elements(tensor: InputTensor) -> list[bytes]:
    """Each element's file: from the binary form, as bytes (gRPC contents), or base64 strings (JSON)."""
    _check_one_form(tensor)
    if tensor.raw is not None:
        files = split_bytes(tensor.raw, tensor.name)
    else:
        files = []
        for index, item in enumerate(tensor.data):
            if isinstance(item, bytes):
                files.append(item)
                continue
            try:
                blob = base64.b64decode(item, validate=True) if isinstance(item, str) else b""
            except (binascii.Error, ValueError):
                blob = b""
            if not blob:
                raise ApiError(400, "invalid_data", f"image {index + 1}: BYTES data must be a base64-encoded image")
            files.append(blob)
    for index, blob in enumerate(files):
        if not blob:
            raise ApiError(400, "empty_file", f"image {index + 1}: the file is empty")
    return files
