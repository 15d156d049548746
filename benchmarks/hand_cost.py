"""What finding the hand costs per photo: `preprocess.prepare` with the hand finder and without it, alternated.

    python benchmarks/hand_cost.py [--rounds 7] [--repeats 20]

For three photos people send (a 64x64 SIGNS JPEG, what the load benchmark posts; a 400x300 webcam frame
from real/hands_frames; the 1080x1440 phone photo sample.jpg), the median over `rounds` of the mean time of
`repeats` calls of `preprocess.prepare` on the file's bytes, in one thread, with the finder as shipped (the hand
found and cut out), with the finder but no cut-out (`_cut_out` replaced by a plain crop of the square) and
with it switched off (`frame_hand` replaced by "read the whole photo"), and, where `signs quantize-hand-models`
has made the int8 landmark model that the shipped finder runs, with a finder of the fp32 models (`fp32`), all
alternating round by round so that all see the same machine. The finders are built (compiling their models,
about 2 s) before timing, as the server does at start-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict_files import cpu_name  # noqa: E402

from signs_resnet.data import preprocess
from signs_resnet.hands import detector

SHARED = ROOT.parent / "shared" / "data"


def photos() -> dict[str, bytes]:
    frame = sorted((SHARED / "real" / "hands_frames" / "2").glob("*.jpg"))[0]
    signs = sorted((SHARED / "signs" / "64x64_SIGNS" / "test_signs").glob("*.jpg"))[0]
    return {f"64x64 SIGNS JPEG ({signs.name})": signs.read_bytes(),
            f"400x300 webcam frame ({frame.name})": frame.read_bytes(),
            "1080x1440 phone photo (sample.jpg)": (SHARED / "samples" / "sample.jpg").read_bytes()}


def whole_photo(image, size=preprocess.IMAGE_SIZE, previous=None):
    return image, preprocess.Framing()


def square_only(image, hand, box, size=preprocess.IMAGE_SIZE):
    """The square around the hand as it is in the photo, the room left in (the finder without the cut-out)."""
    return image.crop(box)


def mean_seconds(blob: bytes, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        preprocess.prepare(blob)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    finder = detector.finder()
    fp32 = detector.HandFinder(int8=False) if finder.int8 else None
    shipped, cut_out, find = preprocess.frame_hand, preprocess._cut_out, preprocess.find_hand
    arms = {"without": (whole_photo, cut_out, find), "square": (shipped, square_only, find),
            "with": (shipped, cut_out, find)}
    if fp32:
        arms["fp32"] = (shipped, cut_out, fp32.find)
    print(f"{cpu_name()}; medians of {args.rounds} rounds x {args.repeats} calls of preprocess.prepare, one "
          f"thread (the hand models on every core); int8: {', '.join(finder.int8) or 'none'}")
    print(f"{'photo':<48} {'without (ms)':>13} {'square, no cut-out (ms)':>24} {'with (ms)':>10} {'ratio':>6} "
          f"{'found':>6}" + (f" {'fp32 (ms)':>10} {'with / fp32':>12}" if fp32 else ""))
    for name, blob in photos().items():
        timings = {arm: [] for arm in arms}
        for _ in range(args.rounds):
            for arm, (preprocess.frame_hand, preprocess._cut_out, preprocess.find_hand) in arms.items():
                timings[arm].append(mean_seconds(blob, args.repeats))
        preprocess.frame_hand, preprocess._cut_out, preprocess.find_hand = shipped, cut_out, find
        without, square, with_finder = (statistics.median(timings[arm]) * 1000 for arm in ("without", "square", "with"))
        framing = preprocess.prepare(blob)[1]
        found = "-" if not framing.searched else ("yes" if framing.score is not None else "no")
        line = (f"{name:<48} {without:>13.2f} {square:>24.2f} {with_finder:>10.2f} {with_finder / without:>5.2f}x "
                f"{found:>6}")
        if fp32:
            full = statistics.median(timings["fp32"]) * 1000
            line += f" {full:>10.2f} {with_finder / full:>11.2f}x"
        print(line)


if __name__ == "__main__":
    main()
