"""The hand finder and the hand's count alone, without the network, on folders of real photos.

    python benchmarks/hand_count.py [FOLDER ...]     (default: ../shared/data/real/hands_crops and hands_frames)

For each folder of class subfolders (0/ ... 5/, labels counting the fingers held up), with the finder's second
search (the photo at half the palm detector's square, hands/detector.py) and without it: in how many photos a
hand is found, and how often the count of fingers its landmarks show (hands/reading.py) is the label, overall
and per class. Nothing is fitted here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet.data import datasets  # noqa: E402
from signs_resnet.hands import detector  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def counts(folder: Path, second_search: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's label and the count its hand shows (-1: no hand found, or no count)."""
    finder = detector.finder()
    files = datasets.image_files(folder)

    def one(path: Path) -> int:
        photo = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        if second_search:
            hand = finder.find(photo)
        else:
            palm_request, _ = finder._requests(alone=False)
            hand = finder.find(photo) if finder._best_palm(photo, palm_request) is not None else None
        given = None if hand is None else hand.reading()
        fingers = None if given is None else given.count
        return -1 if fingers is None else fingers

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        shown = np.array(list(pool.map(one, files)))
    return np.array([int(path.parent.name) for path in files]), shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[REAL / "hands_crops", REAL / "hands_frames"])
    args = parser.parse_args()
    for folder in args.folders:
        for second_search in (False, True):
            started = time.perf_counter()
            labels, shown = counts(folder, second_search)
            per_class = ", ".join(f"{c}: {(shown[labels == c] == c).mean():.0%}" for c in np.unique(labels))
            print(f"{folder.name} ({len(labels)} photos), second search {'on' if second_search else 'off'}: hand "
                  f"found {(shown >= 0).mean():.1%}, the count alone right {(shown == labels).mean():.1%} "
                  f"({per_class}) [{time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
