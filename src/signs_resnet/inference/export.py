"""ONNX export of a trained model, and the parity check against PyTorch.

The exported graph is the whole prediction step: float32 images N x 3 x H x W scaled to [0, 1]
(what `preprocess.prepare_image` returns) in; class probabilities N x classes (softmax with the model's
temperature) and the logits before it out. The classes, checksum and preprocessing travel in the
file's metadata.

The int8 form (format "onnx-int8") is the same graph with int8 weights and activations, calibrated
on training photos, as quantize/dequantize pairs that OpenVINO runs with int8 kernels (the server's
`openvino-int8` engine).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from signs_resnet import artifact
from signs_resnet.data import datasets, preprocess
from signs_resnet.extras import require
from signs_resnet.inference.forward import predict
from signs_resnet.model_file import LoadedModel

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
LOGITS_NAME = "logits"
# ONNX Runtime and PyTorch (both fp32) sum in different orders, so they agree closely but not exactly. The
# promises the parity check makes, well above what is measured (docs/performance.md, "ONNX parity"):
PARITY_TOLERANCE = 1e-4  # absolute, on probabilities
LOGITS_TOLERANCE = 1e-3  # relative to the largest logit (probabilities saturate; logits show any error)
# The int8 graph against the fp32 model on training photos the calibration did not use; what the default
# model measures is in docs/performance.md, "The int8 graph".
INT8_MIN_AGREEMENT = 0.99  # share of photos given the same class (of those the fp32 model is clear about)
INT8_CLEAR_MARGIN = 0.2  # top-two probability gap that makes a photo "clear"
INT8_MAX_MEAN_DIFFERENCE = 0.01  # mean absolute probability difference
INT8_CALIBRATION_IMAGES = 256
HEAD_OPERATORS = ("Div", "Softmax")  # temperature, softmax: left in float by the quantizer, as is the dense layer
FORMATS = {"onnx": ".onnx", "onnx-int8": ".int8.onnx"}  # format -> suffix of the file beside the model


class _Probabilities(nn.Module):
    def __init__(self, network: nn.Module, temperature: float):
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(images)
        return torch.softmax(logits / self.temperature, dim=1), logits


def probabilities_module(model: LoadedModel, for_openvino: bool = False) -> nn.Module:
    """The whole prediction step as one module: images -> (probabilities, logits); with `for_openvino`, the
    network in `openvino_form`."""
    network = openvino_form(model.network, model.input_shape) if for_openvino else model.network
    return _Probabilities(network, float(model.metadata.get("temperature", 1.0))).eval()


# f x f convolutions on feature maps this small (stage 5's 2x2 at 64x64 input) run as one matrix product
# over the whole map in the int8 graph (see openvino_form): on a 2x2 map a 3x3 kernel links every input
# pixel to every output pixel. On stage 4's 4x4 maps it links 100 of the 256 pairs: the product would
# take 28 times the convolution's weights and 2.6 times its multiplications.
WHOLE_MAP_MAX_PIXELS = 4


class _Subsampled(nn.Module):
    """A strided 1x1 convolution written as what it computes: every stride-th pixel, then a 1x1 convolution."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.step = conv.stride
        self.conv = conv
        conv.stride = (1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :, ::self.step[0], ::self.step[1]])


class _WholeMapProduct(nn.Module):
    """A "same" f x f convolution and its batch norm (inference statistics) on an H x W map, as one matrix
    product over the whole map: output pixel (i, j) of channel o sums, over input channels c and pixels
    (k, l), kernel[o, c, k - i + f // 2, l - j + f // 2] * x[c, k, l] wherever that tap exists."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, height: int, width: int):
        super().__init__()
        kernel = conv.weight.detach().float()
        out_channels, in_channels, kernel_height, kernel_width = kernel.shape
        weight = kernel.new_zeros(out_channels, height, width, in_channels, height, width)
        for i, j, k, l in itertools.product(range(height), range(width), repeat=2):
            di, dj = k - i + kernel_height // 2, l - j + kernel_width // 2
            if 0 <= di < kernel_height and 0 <= dj < kernel_width:
                weight[:, i, j, :, k, l] = kernel[:, :, di, dj]
        scale = (norm.weight / torch.sqrt(norm.running_var + norm.eps)).detach()
        shift = (norm.bias - norm.running_mean * scale).detach()
        self.weight = nn.Parameter((weight * scale.view(-1, 1, 1, 1, 1, 1)).reshape(out_channels * height * width, -1))
        self.bias = nn.Parameter(shift.repeat_interleave(height * width))
        self.shape = (out_channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.weight.T + self.bias).view(-1, *self.shape)


def openvino_form(network: nn.Module, input_shape: tuple[int, int, int]) -> nn.Module:
    """A copy of `network` (in inference mode) computing the same function in the form OpenVINO runs
    fastest, found with its per-layer profile and alternating timings (docs/performance.md, "The int8 graph"):

    - each strided 1x1 convolution (the first and the shortcut convolution of the stride-2 blocks) as a
      subsampling then a 1x1 convolution. OpenVINO's CPU plugin rewrites a strided 1x1 convolution into
      a pooling and a convolution, and then runs those in bf16 with dequantized weights; in this form
      all run in int8;
    - each f x f convolution on a map of at most WHOLE_MAP_MAX_PIXELS pixels (stage 5's 2x2), with its batch
      norm, as one matrix product over the map (_WholeMapProduct): as a convolution it computes 9 taps per
      pixel of which 5 read padding. Batch 1 pays a little, reading the larger weights for one image.

    The `openvino` engine (bf16, converted from PyTorch) gains as much. ONNX Runtime's fp32 graph runs
    slower with the first change, so the fp32 ONNX export keeps the plain form."""
    network = copy.deepcopy(network).eval()
    sizes = _input_sizes(network, input_shape)
    for module in list(network.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and _plain(child) and child.kernel_size == (1, 1) and child.stride != (1, 1):
                setattr(module, name, _Subsampled(child))
            elif (isinstance(child, nn.Sequential) and len(child) == 2 and isinstance(child[0], nn.Conv2d)
                  and isinstance(child[1], nn.BatchNorm2d) and _plain(child[0]) and child[0].stride == (1, 1)
                  and child[0].padding == tuple(k // 2 for k in child[0].kernel_size)
                  and child[0].kernel_size != (1, 1) and math.prod(sizes[child[0]]) <= WHOLE_MAP_MAX_PIXELS):
                setattr(module, name, _WholeMapProduct(child[0], child[1], *sizes[child[0]]))
    return network


def _plain(conv: nn.Conv2d) -> bool:
    return conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None and conv.padding_mode == "zeros"


def _input_sizes(network: nn.Module, input_shape: tuple[int, int, int]) -> dict[nn.Module, tuple[int, int]]:
    """Height and width of each convolution's input, for one image of `input_shape` (H, W, C)."""
    sizes = {}
    hooks = [module.register_forward_pre_hook(lambda module, args: sizes.__setitem__(module, tuple(args[0].shape[-2:])))
             for module in network.modules() if isinstance(module, nn.Conv2d)]
    height, width, channels = input_shape
    with torch.inference_mode():
        network(torch.zeros(1, channels, height, width))
    for hook in hooks:
        hook.remove()
    return sizes


def export_onnx(model: LoadedModel, for_openvino_int8: bool = False) -> bytes:
    """The model as an ONNX file (bytes): `input` N x 3 x H x W float32 -> `probabilities`, `logits`; with
    `for_openvino_int8`, the network in `openvino_form`."""
    require("onnxscript", "ONNX export")  # torch.onnx's exporter
    height, width, channels = model.input_shape
    module = probabilities_module(model, for_openvino=for_openvino_int8)
    example = torch.rand(2, channels, height, width)
    with _quiet("onnxscript", "onnx_ir", "torch.onnx"), torch.inference_mode(False):
        program = torch.onnx.export(
            module, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, LOGITS_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
        )
    return _with_metadata(program.model_proto, {
        "classes": json.dumps(model.classes),
        "input_shape": json.dumps(list(model.input_shape)),
        "preprocessing": json.dumps(model.metadata.get("preprocessing", {})),
        "source_checksum": model.checksum,
    }).SerializeToString()


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Silence the exporters' and quantizer's deprecation notices and progress chatter."""
    chatty = [logging.getLogger(name) for name in loggers]
    levels = [logger.level for logger in chatty]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in chatty:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(chatty, levels):
                logger.setLevel(level)


def _with_metadata(proto, metadata: dict[str, str]):
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def beside(model: LoadedModel, format: str = "onnx") -> Path | None:
    """The file `signs export --format FORMAT` wrote beside the model (model.onnx, model.int8.onnx), if it
    is there and was exported from this very model (same checksum)."""
    import onnx

    path = Path(model.path).with_suffix(FORMATS[format])
    if not path.is_file():
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
        source = {p.key: p.value for p in proto.metadata_props}.get("source_checksum")
    except Exception as error:  # noqa: BLE001 - any unreadable file is simply not used
        log.warning("ignoring %s: %s", path, error)
        return None
    if source != model.checksum:
        log.info("ignoring %s: exported from another model", path)
        return None
    return path


def exported_or_export(model: LoadedModel) -> bytes:
    """The model's ONNX graph: the file `signs export` wrote beside it when it was exported from this
    very model, else a fresh in-memory export (several seconds)."""
    path = beside(model)
    if path:
        log.info("using %s", path)
        return path.read_bytes()
    log.info("exporting %s to ONNX in memory (run `signs export --model %s` to skip this)", model.path, model.path)
    return export_onnx(model)


def quantize_int8(onnx_bytes: bytes, calibration: torch.Tensor) -> bytes:
    """The graph with int8 weights (per output channel) and activations (per tensor, their ranges measured
    on `calibration` images), as QDQ: quantize/dequantize pairs that OpenVINO fuses into int8 kernels."""
    import onnx
    require("onnxruntime", "the int8 export")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch.numpy()}

    metadata = {p.key: p.value for p in onnx.load_from_string(onnx_bytes).metadata_props}
    with tempfile.TemporaryDirectory() as tmp, _quiet("onnxruntime"):
        source, prepared, quantized = (str(Path(tmp) / name) for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        Path(source).write_bytes(onnx_bytes)
        quant_pre_process(source, prepared)  # shape inference and graph clean-up, as the quantizer expects
        # The head (dense layer, temperature, softmax) stays float: quantized, the probabilities would come
        # in steps of 1/255 and the logits in steps of their range / 255. It is 0.002% of the computation.
        head = [node.name for node in onnx.load(prepared).graph.node
                if node.op_type in HEAD_OPERATORS or LOGITS_NAME in node.output]
        quantize_static(prepared, quantized, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=head)
        proto = onnx.load(quantized)
    metadata["quantization"] = json.dumps({"weights": "int8 per channel", "activations": "uint8 per tensor",
                                           "calibration_images": len(calibration)})
    return _with_metadata(proto, metadata).SerializeToString()


def int8_agreement(model: LoadedModel, session: Any, images: torch.Tensor) -> dict[str, float]:
    """How the int8 graph's answers compare with the fp32 model's on `images`. "agreement" counts the
    images the fp32 model is clear about (its top two classes INT8_CLEAR_MARGIN apart): on the others a
    tiny difference may swap the top two, which says nothing about the quantization."""
    expected = predict(model, images)
    probabilities = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])
    top_two = expected.topk(2, dim=1).values
    clear = top_two[:, 0] - top_two[:, 1] >= INT8_CLEAR_MARGIN
    same = expected.argmax(1) == probabilities.argmax(1)
    return {"agreement": same[clear].float().mean().item() if clear.any() else 1.0, "clear_images": int(clear.sum()),
            "mean_difference": (expected - probabilities).abs().mean().item(),
            "max_difference": (expected - probabilities).abs().max().item()}


def onnx_session(onnx_bytes: bytes | str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with every graph optimisation on (`threads` 0: one per core)."""
    onnxruntime = require("onnxruntime", "ONNX Runtime (the onnx engine, the export's parity check)")
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


def export(model: LoadedModel, out: str | Path, format: str = "onnx", check: bool = True,
           data_path: str | None = None) -> dict[str, Any]:
    """Write `model` to `out` atomically in `format` ("onnx" or "onnx-int8"); with `check`, compare it with
    PyTorch first (random images for onnx; training photos the calibration did not use for onnx-int8,
    which reads the training split from `data_path`, default: the SIGNS data)."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; supported: {', '.join(FORMATS)}")
    onnx_bytes = export_onnx(model, for_openvino_int8=format == "onnx-int8")
    result: dict[str, Any] = {"path": str(out), "format": format}
    if format == "onnx-int8":
        photos = _training_photos(data_path)
        count = min(INT8_CALIBRATION_IMAGES, len(photos) // 2)
        calibration, held = photos[:count], photos[count:2 * count]
        onnx_bytes = quantize_int8(onnx_bytes, calibration)
        if check:
            result["difference"] = int8_agreement(model, onnx_session(onnx_bytes), held)
            if (result["difference"]["agreement"] < INT8_MIN_AGREEMENT
                    or result["difference"]["mean_difference"] > INT8_MAX_MEAN_DIFFERENCE):
                raise ValueError(f"the int8 graph disagrees with the fp32 model on {len(held)} training photos: "
                                 f"{result['difference']} (needs agreement >= {INT8_MIN_AGREEMENT}, mean "
                                 f"difference <= {INT8_MAX_MEAN_DIFFERENCE}); not written")
    elif check:
        height, width, channels = model.input_shape
        images = torch.rand(8, channels, height, width, generator=torch.Generator().manual_seed(0))
        difference = parity(model, onnx_session(onnx_bytes), images)
        if difference["probabilities"] > PARITY_TOLERANCE or difference["logits"] > LOGITS_TOLERANCE:
            raise ValueError(f"ONNX export disagrees with PyTorch on random images: {difference} (tolerances: "
                             f"probabilities {PARITY_TOLERANCE:.0e}, logits {LOGITS_TOLERANCE:.0e}); not written")
        result["difference"] = difference
    result["bytes"] = len(onnx_bytes)
    artifact.atomic_write(out, onnx_bytes)
    log.info("wrote %s (%d bytes)", out, len(onnx_bytes))
    return result


def _training_photos(data_path: str | None) -> torch.Tensor:
    """The training photos as model input, in a fixed shuffled order."""
    train = datasets.load_splits(data_path).train
    if train is None:
        raise ValueError(f"{data_path or datasets.default_data_path()}: holds no training photos to calibrate int8 on")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    return preprocess.scale(train.images[order])
