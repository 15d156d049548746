"""Fit the fingers' reading (hands/reading.py) on SIGNS photos and measure it against the retired thresholds.

    python benchmarks/finger_count.py [--data DIR] [--real DIR] [--write]

The reading is three logistic models on the hand's landmarks (hands/reading.py): one for the four fingers
(each held up or not), one for the thumb, one for an O. They are fitted here on the 1080 SIGNS training photos
(train_signs and val_signs) enlarged 4x, so that the hand finder finds the hand, each to what SIGNS' classes
hold up (1: the index; 2: and the middle finger; 3: and the thumb; 4: the four fingers, thumb folded; 5: all;
0: an O, no finger up). The fingers' and the thumb's models are fitted on classes 1-5 (an O's curled fingers
are neither held up nor folded), the O's on all six. Nothing from real/ is fitted.

It prints, for the reading and for the thresholds it replaces (a finger held out when its tip is 1.22 times as
far from the wrist as its middle joint; the thumb when its tip is 0.80 palm lengths from the palm's centre):
  val_signs x4        read by a reading fitted on train_signs alone: the choice of features was made here
  test_signs x4       SIGNS' own test photos (its 0s are O's) read by the reading fitted on all 1080
  real/ crops, frames the count alone (no network) on every photo, no hand counting as wrong; per class; the
                      fists (its 0s) and the middle+ring+little threes (its 3s) are parts of these
--write writes hands/finger_reading.json (fitted on all 1080) and prints its SHA-256 for hands/reading.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet import artifact
from signs_resnet.data import datasets
from signs_resnet.hands import detector, model_files, reading

FACTOR = 4
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
# Which of (thumb, index, middle, ring, little) SIGNS' classes hold up.
HELD_UP = {0: (0, 0, 0, 0, 0), 1: (0, 1, 0, 0, 0), 2: (0, 1, 1, 0, 0), 3: (1, 1, 1, 0, 0), 4: (0, 1, 1, 1, 1),
           5: (1, 1, 1, 1, 1)}
FINGER_OUT, THUMB_OUT = 1.22, 0.80  # the thresholds the reading replaced
L2 = 1e-2  # the logistic models' weight decay, on standardised features


def find_all(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's hand as the product finds it: photo points (N x 21 x 2) and world points (N x 21 x 3), NaN
    where no hand was found."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        hands = list(pool.map(detector.find_hand, images))
    points = np.full((len(images), 21, 2), np.nan)
    world = np.full((len(images), 21, 3), np.nan)
    for i, hand in enumerate(hands):
        if hand is not None and hand.world is not None:
            points[i], world[i] = hand.points, hand.world
    return points, world


def signs_hands(dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hands in a SIGNS dataset's photos enlarged FACTOR times, and the photos' counts."""
    images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in dataset.images]
    images = [image.resize((image.width * FACTOR, image.height * FACTOR), Image.Resampling.BICUBIC) for image in images]
    points, world = find_all(images)
    return points, world, np.array([int(dataset.classes[label]) for label in dataset.labels.tolist()])


def real_hands(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hands in a real/ folder's photos (one subfolder per count), as the product reads them, and counts."""
    files = sorted((f, int(f.parent.name)) for f in folder.glob("[0-5]/*.jpg"))
    images = [ImageOps.exif_transpose(Image.open(f)).convert("RGB") for f, _ in files]
    points, world = find_all(images)
    return points, world, np.array([count for _, count in files])


def _fit_logistic(values: np.ndarray, targets: np.ndarray, names: tuple[str, ...]) -> reading.Logistic:
    """A logistic model fitted by L-BFGS on standardised features, with weight decay L2."""
    x = torch.tensor(values, dtype=torch.float64)
    t = torch.tensor(targets, dtype=torch.float64)
    mean, scale = x.mean(0), x.std(0)
    z = (x - mean) / scale
    weights = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ weights + bias, t) + L2 * weights.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    rounded = lambda v: tuple(round(float(x), 6) for x in v)  # noqa: E731
    return reading.Logistic(names, rounded(mean), rounded(scale), rounded(weights.detach()), round(float(bias.detach()), 6))


def fit_reading(points: np.ndarray, world: np.ndarray, counts: np.ndarray) -> reading.FingerReading:
    """The three models fitted on SIGNS hands (no NaN rows) and their counts."""
    values = reading.features(points, world)
    up = np.array([HELD_UP[c] for c in counts], dtype=float)
    shown = counts > 0
    thumb = _fit_logistic(np.stack([values[n] for n in reading.THUMB_FEATURES], 1)[shown], up[shown, 0],
                          reading.THUMB_FEATURES)
    finger = _fit_logistic(values["finger_reach"][shown].reshape(-1, 1), up[shown, 1:].reshape(-1),
                           reading.FINGER_FEATURES)
    o = _fit_logistic(np.stack([values[n] for n in reading.O_FEATURES], 1), (counts == 0).astype(float),
                      reading.O_FEATURES)
    fitted_with = {"photos": f"{len(counts)} SIGNS training hands found, photos enlarged {FACTOR}x",
                   "ROOM": detector.ROOM, **{name: sha for name, sha in model_files.SHA256.items()}}
    return reading.FingerReading(thumb, finger, o, fitted_with)


def threshold_counts(points: np.ndarray) -> np.ndarray:
    """The retired count: fingers past FINGER_OUT, the thumb past THUMB_OUT (its tip's distance from the palm's
    centre, the mean of the wrist and the four knuckles, over the palm's length)."""
    values = reading.features(points, np.zeros(points.shape[:2] + (3,)))
    centre = points[:, [0, 5, 9, 13, 17]].mean(1)
    palm = np.linalg.norm(points[:, 9] - points[:, 0], axis=-1)
    thumb_reach = np.linalg.norm(points[:, 4] - centre, axis=-1) / np.where(palm > 1e-9, palm, np.nan)
    return (thumb_reach > THUMB_OUT).astype(int) + (values["finger_reach"] > FINGER_OUT).sum(1)


def row(name: str, shown: np.ndarray, counts: np.ndarray) -> str:
    """One line: the share of photos whose count is right (no hand: wrong), and per count."""
    per = "  ".join(f"{c}: {(shown[counts == c] == c).mean():4.0%}" for c in range(6) if (counts == c).any())
    return f"  {name:<16} {(shown == counts).mean():6.1%}   {per}"


def compare(title: str, found: tuple[np.ndarray, np.ndarray, np.ndarray], model: reading.FingerReading) -> None:
    points, world, counts = found
    hand = np.isfinite(points).all((1, 2)) & np.isfinite(world).all((1, 2))
    new = np.full(len(counts), -1)
    new[hand] = np.nan_to_num(model.read_many(points[hand], world[hand])[2], nan=-1).argmax(1)
    old = np.full(len(counts), -1)
    old[hand] = threshold_counts(points[hand])
    print(f"{title}: {len(counts)} photos, a hand found in {hand.mean():.1%}")
    print(row("the reading", new, counts))
    print(row("the thresholds", old, counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="SIGNS data (default: $SIGNS_DATA or ../shared/data/signs)")
    parser.add_argument("--real", type=Path, default=REAL, help="real/ (measured only)")
    parser.add_argument("--write", action="store_true", help="write hands/finger_reading.json")
    args = parser.parse_args()
    held_out = datasets.load_splits(args.data, hold_out_validation=True)
    train, val = signs_hands(held_out.train), signs_hands(held_out.val)
    usable = lambda found: np.isfinite(found[0]).all((1, 2)) & np.isfinite(found[1]).all((1, 2))  # noqa: E731
    first = fit_reading(*(part[usable(train)] for part in train))
    compare(f"val_signs x{FACTOR} (the reading fitted on train_signs alone)", val, first)
    everything = tuple(np.concatenate([a, b]) for a, b in zip(train, val))
    model = fit_reading(*(part[usable(everything)] for part in everything))
    print(f"fitted on {usable(everything).sum()} hands found in the 1080 SIGNS training photos")
    if held_out.test is not None:
        compare(f"test_signs x{FACTOR}", signs_hands(held_out.test), model)
    for name in ("hands_crops", "hands_frames"):
        if (args.real / name).is_dir():
            compare(f"real/{name} (measured, not fitted)", real_hands(args.real / name), model)
    text = (json.dumps(model.as_json(), indent=1) + "\n").encode()
    same = reading.READING_FILE.is_file() and reading.READING_FILE.read_bytes() == text
    print(f"the fit is {'the same as' if same else 'not'} {reading.READING_FILE.name}; its SHA-256: "
          f"{hashlib.sha256(text).hexdigest()}")
    if args.write:
        artifact.atomic_write(reading.READING_FILE, text)
        print(f"wrote {reading.READING_FILE}: set READING_SHA256 in hands/reading.py to the SHA-256 above")


if __name__ == "__main__":
    main()
