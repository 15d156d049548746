"""Which inference engine is fastest here? Milliseconds per forward pass and images/s by batch size.

    .venv/bin/python benchmarks/engines.py [--model FILE] [--batch-sizes 1,2,4,8,16,32] [--seconds 1]

Engines: PyTorch eager fp32 (as trained, channels_last), the same with batch norms folded, bf16
autocast, and ONNX Runtime on the exported graph. The probabilities' largest difference from fp32
is printed too. The server's default engine (serve.ServeSettings.engine) is this table's winner.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from signs_resnet.export import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_session  # noqa: E402
from signs_resnet.predict import load_model, optimize_for_inference, predict  # noqa: E402


def engines(model_path: str) -> dict:
    model = load_model(model_path)
    folded = optimize_for_inference(model)
    session = onnx_session(export_onnx(model))
    return {
        "torch fp32": lambda x: predict(model, x),
        "torch fp32, folded BN": lambda x: predict(folded, x),
        "torch bf16 autocast": lambda x: predict(folded, x, precision="bf16"),
        "onnxruntime fp32": lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]),
    }


def median_seconds(run, images: torch.Tensor, seconds: float) -> float:
    for _ in range(3):
        run(images)
    times, started = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    runs = engines(args.model)
    check = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    reference = runs["torch fp32"](check)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per forward pass (images/s)")
    print(f"{'engine':<24}{'max |dp|':>9}" + "".join(f"{f'batch {b}':>17}" for b in sizes))
    for name, run in runs.items():
        difference = float((run(check) - reference).abs().max())
        row = f"{name:<24}{difference:>9.0e}"
        for size in sizes:
            seconds = median_seconds(run, torch.rand(size, 3, 64, 64), args.seconds)
            row += f"{seconds * 1000:>8.2f} ({size / seconds:>5.0f})"
        print(row, flush=True)


if __name__ == "__main__":
    main()
