"""Fit and measure the hand's own count of fingers (geometry.Hand.fingers) on SIGNS photos.

    python benchmarks/finger_count.py [--data DIR]

The confidence rule (docs/accuracy.md, "Confidence") marks an answer confident only when the hand's 21
landmarks show as many fingers held out as the answer counts. Whether a finger is held out is one ratio per
finger, compared with a threshold:

  a finger (index to little)  its tip's distance from the wrist / its middle joint's    > FINGER_OUT
  the thumb                   its tip's distance from the palm's centre (the mean of     > THUMB_OUT
                              the wrist and the four knuckles) / the palm's length
                              (wrist to the middle finger's knuckle)

Both thresholds are fitted here on the 1080 SIGNS training photos (train_signs and val_signs), enlarged 4x so
that the landmark models find the hand, each to its own fingers: SIGNS' classes say which are held out (1: the
index; 2: and the middle finger; 3: and the thumb; 4: the four fingers, thumb folded; 5: all). The "0" is an O,
whose curled fingers are neither held out nor folded, so it takes no part in the fit. The threshold is the one
that tells the most fingers apart. Nothing from real/ is used. It prints the thresholds, how often the count
agrees with each SIGNS class, and the same on the 120 test photos (not used to fit).

It also fits reading.COUNT_LIKELIHOOD, with which an answer weighs the network's probabilities by the count
(answer.posterior): on the same training photos, at hands/reading.py's thresholds, how often a hand of each class
shows each count from 0 to 5, one added to every cell (so that no count rules a class out). It prints the
table as hands/reading.py holds it, and says whether its is the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet.data import datasets
from signs_resnet.hands import detector, geometry, reading

FACTOR = 4
# Which of (thumb, index, middle, ring, little) SIGNS' classes hold out.
HELD_OUT = {1: (0, 1, 0, 0, 0), 2: (0, 1, 1, 0, 0), 3: (1, 1, 1, 0, 0), 4: (0, 1, 1, 1, 1), 5: (1, 1, 1, 1, 1)}


def landmarks(dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The hands found in the enlarged photos (K x 21 x 2) and their class names' counts (K); the finder's
    threads share the photos (the same hands as one thread finds)."""
    def find(image):
        photo = Image.fromarray(image.permute(1, 2, 0).numpy())
        return detector.find_hand(photo.resize((photo.width * FACTOR, photo.height * FACTOR), Image.Resampling.BICUBIC))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        hands = list(pool.map(find, dataset.images))
    found = [(hand.points, int(dataset.classes[label])) for hand, label in zip(hands, dataset.labels.tolist()) if hand]
    return np.stack([points for points, _ in found]), np.array([count for _, count in found])


def fit(values: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """The threshold between sorted neighbouring values that tells the most of them apart, and that share."""
    out, values = out[np.isfinite(values)], values[np.isfinite(values)]
    candidates = np.unique(values)
    candidates = (candidates[1:] + candidates[:-1]) / 2
    right = np.array([((values > t) == out).mean() for t in candidates])
    best = int(np.argmax(right))
    return float(candidates[best]), float(right[best])


def likelihood(shown: np.ndarray, counts: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Per class ("0" to "5"), the share of its hands that show each count 0 to 5, one added to every cell."""
    table = {}
    for c in range(6):
        cells = np.bincount(shown[counts == c], minlength=6) + 1
        table[str(c)] = tuple(round(float(v), 3) for v in cells / cells.sum())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="SIGNS data (default: $SIGNS_DATA or ../shared/data/signs)")
    args = parser.parse_args()
    splits = datasets.load_splits(args.data, hold_out_validation=False)
    points, counts = landmarks(splits.train)
    print(f"hands found in {len(points)} of {len(splits.train.labels)} SIGNS training photos enlarged {FACTOR}x")
    used = counts > 0
    values, out = reading.finger_ratios(points)[used], np.array([HELD_OUT[c] for c in counts[used]], dtype=bool)
    thumb, thumb_right = fit(values[:, 0], out[:, 0])
    finger, finger_right = fit(values[:, 1:].ravel(), out[:, 1:].ravel())
    print(f"THUMB_OUT = {thumb:.2f} (tells {thumb_right:.1%} of the thumbs apart); "
          f"FINGER_OUT = {finger:.2f} ({finger_right:.1%} of the fingers); in hands/reading.py: {reading.THUMB_OUT}, "
          f"{reading.FINGER_OUT}")
    for name, dataset in (("training photos", splits.train), ("test photos", splits.test)):
        if dataset is None:
            continue
        points, counts = landmarks(dataset) if dataset is not splits.train else (points, counts)
        shown = np.array([geometry.Hand(p, 1.0).fingers() for p in points])
        per_class = ", ".join(f"{c}: {(shown[counts == c] == c).mean():.0%}" for c in np.unique(counts))
        print(f"{name}: the count (hands/reading.py's thresholds) agrees with {(shown == counts).mean():.1%} of "
              f"{len(counts)} hands found ({per_class})")
        if dataset is splits.train:
            told = np.array([s is not None for s in shown])
            table = likelihood(shown[told].astype(int), counts[told])
            print("COUNT_LIKELIHOOD = {  # class: P(count 0, 1, ..., 5 | class)")
            for c, row in table.items():
                print(f'    "{c}": ({", ".join(f"{v:.3f}" for v in row)}),')
            print(f"}}  (hands/reading.py holds {'the same' if table == reading.COUNT_LIKELIHOOD else 'another'})")


if __name__ == "__main__":
    main()
