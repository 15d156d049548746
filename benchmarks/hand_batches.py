"""What batching would save the hand models: each model's time per image at batch 1, 2 and 4, as the finder
compiles it for photos looked at together (one thread), alternated round by round.

    python benchmarks/hand_batches.py [--rounds 7] [--images 8]

The palm detector (fp32) and the landmark model, fp32 and, where `signs quantize-hand-models` has made it, int8,
each reshaped to the batch and compiled as `hands/detector.HandFinder` compiles it (one stream, one thread, f32
inference), run on random inputs (the models' cost does not depend on what they see): the median over `rounds` of
the mean time per image of `images` images run in batches of that size. Batching concurrent requests' searches
would pay only if an image cost clearly less in a batch than alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict_files import cpu_name  # noqa: E402

from signs_resnet.hands.detector import compile_options, read_model
from signs_resnet.hands.model_files import LANDMARK_FILE, PALM_FILE, int8_models, model_paths

BATCHES = (1, 2, 4)


def models(core) -> dict[str, object]:
    """The models as the finder reads them: both in fp32, and the landmark model in int8 where it is made."""
    fp32 = model_paths()
    found = {"palm detector, fp32": read_model(core, fp32[PALM_FILE]),
             "landmark model, fp32": read_model(core, fp32[LANDMARK_FILE])}
    quantized = int8_models() or {}
    if LANDMARK_FILE in quantized:
        found["landmark model, int8"] = read_model(core, fp32[LANDMARK_FILE], quantized[LANDMARK_FILE])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=8, help="images per round (a multiple of 4)")
    args = parser.parse_args()
    if args.rounds < 1 or args.images < 4 or args.images % 4:
        parser.error("--rounds must be at least 1 and --images a positive multiple of 4")
    import openvino as ov

    core = ov.Core()
    requests = {}
    for name, model in models(core).items():
        shape = list(model.input(0).shape)
        for batch in BATCHES:
            reshaped = model.clone()
            reshaped.reshape([batch, *shape[1:]])
            compiled = core.compile_model(reshaped, "CPU", compile_options(streams=1, threads=1))
            inputs = np.random.default_rng(0).random((batch, *shape[1:]), dtype=np.float32)
            requests[name, batch] = compiled.create_infer_request(), inputs
    for request, inputs in requests.values():  # warm-up
        request.infer([inputs])
    times: dict[tuple[str, int], list[float]] = {key: [] for key in requests}
    for _ in range(args.rounds):
        for (name, batch), (request, inputs) in requests.items():
            started = time.perf_counter()
            for _ in range(args.images // batch):
                request.infer([inputs])
            times[name, batch].append((time.perf_counter() - started) / args.images * 1000)
    print(f"{cpu_name()}; one thread; median of {args.rounds} rounds of {args.images} images; "
          f"OpenVINO {ov.__version__}")
    print("| model | " + " | ".join(f"batch {batch}: ms an image" for batch in BATCHES) + " | batch 4 / batch 1 |")
    print("| :--- |" + " ---: |" * (len(BATCHES) + 1))
    for name in dict.fromkeys(name for name, _ in requests):
        medians = [statistics.median(times[name, batch]) for batch in BATCHES]
        cells = " | ".join(f"{value:.2f}" for value in medians)
        print(f"| {name} | {cells} | {medians[-1] / medians[0]:.2f}× |")


if __name__ == "__main__":
    main()
