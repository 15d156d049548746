"""A probe, not a product path: can the classifier find the hand in a whole frame by itself?

    python benchmarks/window_search.py MODEL [--scales 128 192 256] [--score probability|energy] [--every 4]

The frame is padded to a square (as prepare_image does) and resized to each scale; the network runs on
it whole, and its dense layer is applied at every 2x2 cell of the last feature map, so each cell scores
a 64-pixel window of that resize (a sliding-window classifier at stride 32). The best-scoring window over
all scales is cut from the frame and classified through prepare_image. It prints the accuracy on every
`--every`-th photo of real/hands_frames, and the accuracy of the plain path on the same photos.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet import load_model  # noqa: E402
from signs_resnet.data import datasets, decoding, preprocess
from signs_resnet.inference.forward import predict


@torch.inference_mode()
def window_logits(network, images: torch.Tensor) -> torch.Tensor:
    """Logits N x classes x h x w, one per 2x2 cell of the last feature map (a 64-pixel window each)."""
    x = images.contiguous(memory_format=torch.channels_last)
    for stage in (network.stage1, network.stage2, network.stage3, network.stage4, network.stage5):
        x = stage(x)
    pooled = F.avg_pool2d(x, 2, stride=1)
    return torch.einsum("nchw,kc->nkhw", pooled, network.fc.weight).float() + network.fc.bias.view(1, -1, 1, 1)


def best_window(model, path: Path, scales: list[int], score: str) -> Image.Image:
    square = preprocess._pad_to_square(decoding._to_rgb(decoding.open_image(path)))
    side = square.size[0]
    temperature = float(model.metadata.get("temperature", 1.0))
    best = None
    for scale in scales:
        pixels = np.array(square.resize((scale, scale), Image.Resampling.LANCZOS))
        logits = window_logits(model.network, torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)[0]
        values = (logits / temperature).softmax(0).amax(0) if score == "probability" else logits.logsumexp(0)
        row, column = divmod(int(values.argmax()), values.shape[1])
        half = 64 / scale * side / 2 * 1.1
        # a cell's window starts at 32 pixels per cell; its centre is 32 pixels further in
        centre_x = min(max((32 * column + 32) / scale * side, half), side - half)
        centre_y = min(max((32 * row + 32) / scale * side, half), side - half)
        if best is None or float(values.max()) > best[0]:
            best = (float(values.max()), centre_x, centre_y, half)
    _, x, y, half = best
    return square.crop((int(x - half), int(y - half), int(x + half), int(y + half)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--scales", type=int, nargs="+", default=[128, 192, 256])
    parser.add_argument("--score", choices=["probability", "energy"], default="probability")
    parser.add_argument("--every", type=int, default=4, help="measure every N-th frame (default: %(default)s)")
    args = parser.parse_args()
    model = load_model(args.model)
    folder = datasets.default_data_path().parent / "real" / "hands_frames"
    files = sorted(folder.glob("*/*.jpg"))[::args.every]
    labels = torch.tensor([model.classes.index(f.parent.name) for f in files])
    started = time.perf_counter()
    found = torch.stack([preprocess.prepare_image(best_window(model, f, args.scales, args.score)) for f in files])
    seconds = (time.perf_counter() - started) / len(files)
    plain = torch.stack([preprocess.prepare_image(f) for f in files])
    for name, images in (("window search", found), ("plain prepare_image", plain)):
        accuracy = (predict(model, images).argmax(1) == labels).float().mean().item()
        print(f"{name}: {accuracy:.1%} of {len(files)} frames" + (f" ({seconds * 1000:.0f} ms a frame)"
                                                                  if name == "window search" else ""))


if __name__ == "__main__":
    main()
