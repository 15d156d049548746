"""The forward pass the server runs, on one of several runtimes.

Every engine maps float images N x 3 x H x W in [0, 1] (what `preprocess.prepare_image` returns) to class
probabilities N x classes, for the same trained model:

    auto           openvino-int8 when the model's int8 graph is beside it, else openvino
    openvino-int8  OpenVINO on the int8 graph `signs export --format onnx-int8` wrote beside the model
                   (model.int8.onnx, exported from this very model); int8 kernels on AMX/VNNI
    openvino       OpenVINO, converted from the PyTorch model at its first start (openvino_cache keeps the
                   conversion); on CPUs with AMX or AVX512-BF16 it runs in bfloat16 (its default there), else fp32
    onnx           ONNX Runtime on the exported graph (export.py), fp32
    torch-bf16     PyTorch eager, batch norms folded, bfloat16 weights (autocast)
    torch-fp32     PyTorch eager, the trained network with its batch norms folded into the convolutions

`benchmarks/engines.py` measures them; the server's default (auto) picks the fastest on our machine.
bf16 and int8 trade a small probability difference from fp32 for speed, without changing the test
photos' classes (docs/performance.md, "Inference engines").
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from signs_resnet.inference.forward import optimize_for_inference, predict
from signs_resnet.model_file import LoadedModel

if TYPE_CHECKING:
    import openvino

log = logging.getLogger(__name__)

ENGINES = ("auto", "openvino-int8", "openvino", "onnx", "torch-bf16", "torch-fp32")


@dataclass
class Engine:
    model: LoadedModel
    name: str
    precision: str  # what it computes in: "fp32", "bf16" or "int8"
    run: Callable[[torch.Tensor], torch.Tensor]  # images N x 3 x H x W in [0, 1] -> probabilities N x classes

    def describe(self) -> str:
        return f"{self.name} ({self.precision})"


def load_engine(model: LoadedModel, name: str, threads: int = 0, batch_size: int = 256) -> Engine:
    """`model` ready to run on engine `name` with `threads` threads (0: one per core)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
    if threads:
        torch.set_num_threads(threads)
    if name in ("auto", "openvino-int8"):
        from signs_resnet.inference.export import beside

        int8 = beside(model, "onnx-int8")
        if int8:
            return _openvino(model, threads, int8)
        if name == "openvino-int8":
            raise ValueError(f"{model.path}: no int8 graph of this model beside it; write one with "
                             f"`signs export --model {model.path} --format onnx-int8`")
        name = "openvino"
    if name == "openvino":
        return _openvino(model, threads)
    if name == "onnx":
        from signs_resnet.inference.export import INPUT_NAME, OUTPUT_NAME, exported_or_export, onnx_session

        session = onnx_session(exported_or_export(model), threads)
        return Engine(model, name, "fp32", lambda images: torch.from_numpy(
            session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]))
    precision = "bf16" if name == "torch-bf16" else "fp32"
    fast = optimize_for_inference(model, precision)
    return Engine(model, name, precision, lambda images: predict(fast, images, batch_size, precision))


def _openvino(model: LoadedModel, threads: int, int8: Path | None = None) -> Engine:
    """OpenVINO on the int8 graph in file `int8`, or else on the PyTorch model converted (or its conversion cached by
    an earlier start, openvino_cache)."""
    import openvino

    from signs_resnet.inference import openvino_cache

    height, width, channels = model.input_shape
    started = time.perf_counter()
    if int8:
        converted = openvino.Core().read_model(str(int8))
        source = f"read {int8.name} in {time.perf_counter() - started:.1f} s"
    elif (converted := openvino_cache.read(model)) is not None:
        source = f"read its cached conversion in {time.perf_counter() - started:.1f} s"
    else:
        converted = _converted(model)
        source = f"converted the PyTorch model in {time.perf_counter() - started:.1f} s"
        saving = time.perf_counter()
        cached = openvino_cache.write(model, converted)
        source += f", cached it in {time.perf_counter() - saving:.1f} s" if cached else ", not cached"
    read = time.perf_counter()
    converted.reshape({converted.inputs[0]: openvino.PartialShape([-1, channels, height, width])})
    config = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
    compiled = openvino.Core().compile_model(converted, "CPU", config)
    request = compiled.create_infer_request()
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    precision = "int8" if int8 else "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
    log.info("OpenVINO (%s): %s, compiled in %.1f s", precision, source, time.perf_counter() - read)
    probabilities = compiled.outputs[0]

    def run(images: torch.Tensor) -> torch.Tensor:
        # the request reuses its output buffer: copy before the next batch overwrites it
        return torch.from_numpy(request.infer({0: images.numpy()})[probabilities].copy())

    return Engine(model, "openvino-int8" if int8 else "openvino", precision, run)


def _converted(model: LoadedModel) -> openvino.Model:
    """The model's whole prediction step converted to an OpenVINO network (a TorchScript trace: seconds)."""
    import openvino

    from signs_resnet.inference.export import probabilities_module

    height, width, channels = model.input_shape
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript tracer's deprecation notices
        return openvino.convert_model(probabilities_module(model, for_openvino=True),
                                      example_input=torch.rand(1, channels, height, width))


def warm_up(engine: Engine, max_batch_size: int) -> float:
    """Run a batch of each power of two up to max_batch_size, and of max_batch_size; return the seconds. The first
    call of a shape picks and compiles kernels, which the sizes between then share: a size first seen later takes
    at most about 1.4 times its second call (docs/performance.md, "Start-up")."""
    started = time.perf_counter()
    height, width, channels = engine.model.input_shape
    with torch.inference_mode():
        for size in warm_up_sizes(max_batch_size):
            engine.run(torch.rand(size, channels, height, width))
    return time.perf_counter() - started


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes warm_up runs: 1, 2, 4, ... below max_batch_size, then max_batch_size."""
    return [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size] + [max_batch_size]
