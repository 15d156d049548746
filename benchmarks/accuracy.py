"""Accuracy of the default recipe over several seeds, and robustness on photos it never saw.

    python benchmarks/accuracy.py [--seeds 0 1 2] [--data PATH] [--epochs N] [--out DIR]

For each seed: trains `signs train` defaults, then reports test accuracy on the original
test_signs.h5, the per-class errors, the expected calibration error, the training wall time, and
the accuracy on the test photos transformed the way phone photos differ from SIGNS (rescaled,
rotated, recoloured, re-framed to other aspect ratios, JPEG-recompressed, on other backgrounds).
The table also gives the accuracy without the test photos that are near-duplicates of training photos.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet import load_model  # noqa: E402
from signs_resnet.data import datasets, preprocess
from signs_resnet.inference.forward import predict
from signs_resnet.training.config import TrainConfig  # noqa: E402
from signs_resnet.training.train import fit  # noqa: E402

# The accuracy issue's targets: at most 1 of the 120 test photos wrong at the median, 2 on any seed, 3 minutes.
TARGET_MEDIAN, TARGET_MIN, TARGET_SECONDS = 119 / 120, 118 / 120, 180
# SIGNS photos were shot in bursts and the original split cut through them, so some test photos are a
# training photo again, a moment later. A photo and its own JPEG copy differ by a mean squared pixel
# difference of about 20 (0-255 scale); photos of a sign from different moments, typically by hundreds (the
# median test photo's nearest training photo is at 528).
NEAR_DUPLICATE_MSE = 100.0


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _reframe(image: Image.Image, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Place the photo off-centre on a larger canvas of another aspect ratio, filled like a wall."""
    base = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    colour = tuple(int(c) for c in np.asarray(base)[:4].reshape(-1, 3).mean(0) * rng.uniform(0.8, 1.05))
    canvas = Image.new("RGB", (width, height), colour)
    x = int(rng.uniform(0, width - base.width)) if width > base.width else (width - base.width) // 2
    y = int(rng.uniform(0, height - base.height)) if height > base.height else (height - base.height) // 2
    canvas.paste(base, (x, y))
    return canvas


TRANSFORMS = {
    "original": lambda im, rng: im,
    "upscaled 1080x1440 portrait": lambda im, rng: _jpeg(_reframe(im, 270, 360, rng).resize((1080, 1440)), 90),
    "landscape 640x480": lambda im, rng: _reframe(im, 320, 256, rng).resize((640, 480)),
    "rotated +-20": lambda im, rng: im.rotate(rng.uniform(-20, 20), Image.Resampling.BICUBIC, fillcolor=im.getpixel((0, 0))),
    "darker + warm": lambda im, rng: Image.merge("RGB", [c.point(lambda v, f=f: v * f) for c, f in
                                                          zip(ImageEnhance.Brightness(im).enhance(0.6).split(), (1.1, 0.95, 0.8))]),
    "brighter, low contrast": lambda im, rng: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.6),
    "grayscale": lambda im, rng: ImageOps.grayscale(im),
    "jpeg quality 20": lambda im, rng: _jpeg(im, 20),
    "mirrored": lambda im, rng: ImageOps.mirror(im),
    "zoomed in 15%": lambda im, rng: im.crop((5, 5, 59, 59)),
}


def robustness(model, test: datasets.Dataset) -> dict[str, float]:
    results = {}
    for name, transform in TRANSFORMS.items():
        rng = np.random.default_rng(0)
        images = [transform(Image.fromarray(x.permute(1, 2, 0).numpy()), rng) for x in test.images]
        batch = torch.stack([preprocess.prepare_image(image) for image in images])
        predicted = predict(model, batch).argmax(1)
        results[name] = (predicted == test.labels).float().mean().item()
    return results


def near_duplicates(test: datasets.Dataset, train: datasets.Dataset) -> torch.Tensor:
    """For each test photo, whether some training photo is within NEAR_DUPLICATE_MSE of it."""
    if test.images.shape[1:] != train.images.shape[1:]:
        return torch.zeros(len(test), dtype=torch.bool)
    train_pixels = train.images.flatten(1).double()
    nearest = torch.cat([torch.cdist(part.flatten(1).double(), train_pixels).min(1).values
                         for part in test.images.split(256)])  # never a whole test x train matrix
    return nearest ** 2 / test.images[0].numel() < NEAR_DUPLICATE_MSE


def accuracy_without(errors: list[dict], duplicated: torch.Tensor) -> float | None:
    """Accuracy over the test photos that are not near-duplicates (None if every one is)."""
    kept = len(duplicated) - int(duplicated.sum())
    errors_kept = sum(not duplicated[error["index"]] for error in errors)
    return (kept - errors_kept) / kept if kept else None


def by_class(labels: list[str]) -> str:
    return ", ".join(f"{label}: {n}" for label, n in sorted(collections.Counter(labels).items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--out", default=None, help="keep each seed's run (model, curves, confusion matrix) in DIR/seedN")
    args = parser.parse_args()
    rows, robust = [], {}
    splits = datasets.load_splits(args.data)
    if splits.train is None or splits.test is None:
        sys.exit(f"{args.data or datasets.default_data_path()}: needs both a training and a test split")
    test_set, duplicated = splits.test, near_duplicates(splits.test, splits.train)
    del splits  # fit() loads its own copy of the training photos
    with contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            config = TrainConfig(data=args.data, out=f"{folder}/seed{seed}", seed=seed, progress=False)
            if args.epochs:
                config.epochs = args.epochs
            started = time.perf_counter()
            summary = fit(config)
            seconds = time.perf_counter() - started
            test = summary["test"]
            model = load_model(summary["model"])
            robust[seed] = robustness(model, test_set)
            errors = by_class([error["label"] for error in test["errors"]])
            rows.append((seed, test["accuracy"], errors, test["ece"], seconds,
                         accuracy_without(test["errors"], duplicated)))
            print(f"seed {seed}: test accuracy {test['accuracy']:.4f} in {seconds:.1f} s", flush=True)

    duplicates_by_class = by_class([test_set.classes[label] for label in test_set.labels[duplicated]])
    print(f"\n{int(duplicated.sum())} of {len(duplicated)} test photos are near-duplicates of training photos "
          f"(by class: {duplicates_by_class}); the last column leaves them out")
    print("\n| seed | test accuracy | errors by true class | ECE | train time (s) | without near-duplicates |")
    print("| ---: | ---: | :--- | ---: | ---: | ---: |")
    for seed, accuracy, errors, ece, seconds, accuracy_kept in rows:
        kept = "none left" if accuracy_kept is None else f"{accuracy_kept:.2%}"
        print(f"| {seed} | {accuracy:.2%} | {errors} | {ece:.3f} | {seconds:.1f} | {kept} |")
    accuracies = [row[1] for row in rows]
    median_accuracy, lowest_accuracy = statistics.median(accuracies), min(accuracies)
    median_seconds = statistics.median(row[4] for row in rows)
    print(f"\nmedian test accuracy {median_accuracy:.2%}, min {lowest_accuracy:.2%}, "
          f"median train time {median_seconds:.1f} s")
    checks = {f"median >= {TARGET_MEDIAN:.1%}": median_accuracy >= TARGET_MEDIAN,
              f"every seed >= {TARGET_MIN:.1%}": lowest_accuracy >= TARGET_MIN,
              f"median train time <= {TARGET_SECONDS} s": median_seconds <= TARGET_SECONDS}
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks.items()))

    print("\n| transformed test photos | " + " | ".join(f"seed {s}" for s in robust) + " |")
    print("| :--- |" + " ---: |" * len(robust))
    for name in TRANSFORMS:
        print(f"| {name} | " + " | ".join(f"{robust[s][name]:.1%}" for s in robust) + " |")


if __name__ == "__main__":
    main()
