"""Which inference engine is fastest here? Milliseconds per forward pass and images/s by batch size.

    .venv/bin/python benchmarks/engines.py [--model FILE] [--batch-sizes 1,2,4,8,16,32] [--seconds 1]

Rows: the training code's forward pass as it is (PyTorch eager fp32, channels_last), then every
engine the server can run (engines.py; openvino-int8 needs `signs export --format onnx-int8` first).
On the 120 SIGNS test photos, "test acc" is an engine's accuracy and "max |dp|" the largest
difference of its probabilities from the first row's. The server's default engine
(settings.ServeSettings.engine, auto) picks this table's winner.

A second table, start-up: per engine, the seconds to load it (OpenVINO converts the network then), to warm it up
as the server does (engines.warm_up: the powers of two up to 32), and then the first call of batch sizes it has not
seen (3, 5, 13, 27) against their second call, the median ratio: near 1 when the warm-up left nothing to compile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from signs_resnet.data.datasets import load_hdf5  # noqa: E402
from signs_resnet.data.preprocess import scale  # noqa: E402
from signs_resnet.inference.engines import ENGINES, load_engine, warm_up, warm_up_sizes  # noqa: E402
from signs_resnet.inference.forward import predict  # noqa: E402
from signs_resnet.model_file import load_model  # noqa: E402

TEST_PHOTOS = ROOT.parent / "shared" / "data" / "signs" / "test_signs.h5"


def median_seconds(run, images: torch.Tensor, seconds: float, calls: int = 5, warm: int = 3) -> float:
    for _ in range(warm if calls > 1 else 0):
        run(images)
    times, started = [], time.perf_counter()
    while len(times) < calls or time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--engines", default=",".join(e for e in ENGINES if e != "auto"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    model = load_model(args.model)
    runs = {"torch fp32 (as trained)": lambda images: predict(model, images)}
    start_up = []
    for name in args.engines.split(","):
        started = time.perf_counter()
        engine = load_engine(model, name)
        loaded = time.perf_counter() - started
        warmed = warm_up(engine, 32)
        ratios = []
        with torch.inference_mode():
            for size in (3, 5, 13, 27):
                first = median_seconds(engine.run, torch.rand(size, 3, 64, 64), 0, calls=1)
                ratios.append(first / median_seconds(engine.run, torch.rand(size, 3, 64, 64), 0, calls=1))
        start_up.append(f"{engine.describe():<24}{loaded:>8.2f}{warmed:>10.2f}{statistics.median(ratios):>22.2f}")
        runs[engine.describe()] = engine.run
    test = load_hdf5(TEST_PHOTOS)
    photos = scale(test.images)
    reference = predict(model, photos)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per forward pass (images/s)")
    print(f"{'engine':<24}{'test acc':>9}{'max |dp|':>9}" + "".join(f"{f'batch {b}':>17}" for b in sizes))
    for name, run in runs.items():
        with torch.inference_mode():
            probabilities = run(photos)
            accuracy = float((probabilities.argmax(1) == test.labels).float().mean())
            difference = float((probabilities - reference).abs().max())
            row = f"{name:<24}{accuracy:>9.2%}{difference:>9.0e}"
            for size in sizes:
                seconds = median_seconds(run, torch.rand(size, 3, 64, 64), args.seconds)
                row += f"{seconds * 1000:>8.2f} ({size / seconds:>5.0f})"
        print(row, flush=True)
    print(f"\nstart-up (warm-up: batch sizes {','.join(map(str, warm_up_sizes(32)))})")
    print(f"{'engine':<24}{'load s':>8}{'warm-up s':>10}{'new size: 1st / 2nd':>22}")
    print("\n".join(start_up))


if __name__ == "__main__":
    main()
