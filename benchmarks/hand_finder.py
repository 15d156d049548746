"""A probe, not a product path: a small hand finder trained on synthetic frames made from SIGNS photos.

    python benchmarks/hand_finder.py MODEL [--steps 1500] [--every 2] [--out DIR]

The classifier's input is 64x64: a hand that covers a tenth of a webcam frame is about 20 pixels wide after
padding and resizing the whole frame. This finder looks at the frame at FINDER_SIZE pixels and answers the
square a SIGNS photo of that hand would cover (centre and side); that square is cut out of the
full-resolution photo for the classifier; a box of WHOLE_FRAME or more of the side keeps the photo whole.

It is trained on SIGNS alone: synthetic frames made of a SIGNS hand (its soft mask from augment.hand_mask, so
the box is exact) pasted at a random scale and place on a procedural background, the arm running on below
it, the hand lit on its own (real hands are often backlit), with skin-coloured faces (dark hair and eyes)
and arms as distractors, 4:3 padding bands, and a share of SIGNS photos as they are (whole frame). It
prints the finder's IoU on test photos pasted the same way, how many SIGNS test photos it leaves whole, and
MODEL's accuracy on every --every-th photo of real/hands_frames and real/hands_crops with and without it.
Results in docs/robustness.md, under lever b (the localiser).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet import load_model  # noqa: E402
from signs_resnet.data import datasets, decoding, preprocess
from signs_resnet.inference.forward import predict
from signs_resnet.training.augment import AugmentConfig, hand_mask, procedural_backgrounds, random_colour  # noqa: E402

FINDER_SIZE = 96  # the side the frame is resized to for the finder
STRIDE = 8  # one grid cell per 8 input pixels: a 12 x 12 grid
# A box with a side of at least this share of the frame is the whole frame: the photo is framed like SIGNS.
WHOLE_FRAME = 0.8


def _block(inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, dilation, dilation, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU(inplace=True))


class HandFinder(nn.Module):
    """Frame N x 3 x FINDER_SIZE x FINDER_SIZE in [0, 1] -> N x 4 x G x G: per cell, the logit that the hand's
    square is centred there, the centre's offset inside the cell (x, y, as logits of [0, 1]) and the log of
    the square's side as a share of the frame. Dilated layers widen the view to the whole hand cheaply."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width, 2), _block(width, 2 * width, 2), _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, dilation=2), _block(4 * width, 4 * width, dilation=4),
            _block(4 * width, 4 * width))
        self.head = nn.Conv2d(4 * width, 4, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(frames))


def decode(outputs: torch.Tensor) -> torch.Tensor:
    """The most likely square per frame: N x 3 (centre x, centre y, side), as shares of the frame side."""
    n, _, grid, _ = outputs.shape
    cell = outputs[:, 0].reshape(n, -1).argmax(1)
    row, column = cell // grid, cell % grid
    at = outputs[torch.arange(n), :, row, column]  # N x 4
    x = (column + torch.sigmoid(at[:, 1])) / grid
    y = (row + torch.sigmoid(at[:, 2])) / grid
    return torch.stack([x, y, torch.exp(at[:, 3]).clamp(max=1.0)], 1)


@torch.inference_mode()
def find(finder: HandFinder, frames: torch.Tensor) -> torch.Tensor:
    """Squares (N x 3: centre x, centre y, side as shares of the frame) for frames N x 3 x S x S in [0, 1]."""
    if frames.shape[-1] != FINDER_SIZE or frames.shape[-2] != FINDER_SIZE:
        frames = F.interpolate(frames, (FINDER_SIZE, FINDER_SIZE), mode="bilinear", antialias=True,
                               align_corners=False)
    return decode(finder(frames))


# --- synthetic frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class FinderConfig:
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    side: tuple[float, float] = (0.22, 1.0)  # the pasted photo's side, a share of the frame's (log-uniform)
    whole_probability: float = 0.15  # frames that are a SIGNS photo as it is (the answer: the whole frame)
    distractor_probability: float = 0.7  # frames with a skin-coloured face and arm that are not the hand
    band_probability: float = 0.5  # frames with the bands of a 4:3 photo padded to a square


def _skin_colour(photos: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each photo's mean colour under its hand mask, N x 3 x 1 x 1."""
    return (photos * masks).sum((2, 3), keepdim=True) / masks.sum((2, 3), keepdim=True).clamp(min=1)


def _squared_distance(images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    difference = images - colours
    return (difference * difference).sum(1, keepdim=True)


def _faces(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft ellipses (N x 1 x S x S) of random size, shape and place, and their dark features (hair on top,
    eyes or glasses): faces, the skin-coloured thing real frames hold most often besides the hand."""
    y = torch.linspace(0, 1, size).view(1, 1, size, 1)
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    centre = torch.rand(n, 2, 1, 1, generator=generator)
    radius = (0.08 + 0.17 * torch.rand(n, 1, 1, 1, generator=generator)) * torch.tensor([1.0, 1.3]).view(1, 2, 1, 1)
    dx, dy = (x - centre[:, :1]) / radius[:, :1], (y - centre[:, 1:]) / radius[:, 1:]
    face = torch.sigmoid((1 - dx ** 2 - dy ** 2) * 8)
    hair = face * torch.sigmoid((-0.5 - dy) * 10) * (torch.rand(n, 1, 1, 1, generator=generator) < 0.8)
    eyes = torch.sigmoid((0.04 - (dx.abs() - 0.4) ** 2 - (dy + 0.15) ** 2) * 60)
    return face, torch.maximum(hair, eyes * (torch.rand(n, 1, 1, 1, generator=generator) < 0.8))


def _bars(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Soft bars (N x 1 x S x S) from a random point off towards the bottom edge: arms and necks."""
    y = torch.linspace(0, 1, size).view(1, 1, size, 1)
    x = torch.linspace(0, 1, size).view(1, 1, 1, size)
    start = torch.rand(n, 2, 1, 1, generator=generator)
    angle = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * math.pi * 0.8  # mostly downwards
    width = 0.04 + 0.08 * torch.rand(n, 1, 1, 1, generator=generator)
    dx, dy = x - start[:, :1], y - start[:, 1:]
    across = (dx * torch.cos(angle) - dy * torch.sin(angle)).abs()
    along = dx * torch.sin(angle) + dy * torch.cos(angle)
    return torch.sigmoid((width - across) * 80) * torch.sigmoid(along * 80)


def _paste(photos: torch.Tensor, masks: torch.Tensor, skin: torch.Tensor, boxes: torch.Tensor, size: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The photos and masks drawn into S x S frames at `boxes` (centre x, centre y, side; shares of the frame).

    Below a photo's square its bottom row's skin-coloured pixels run on to the frame's edge, so the arm
    continues as in a real frame instead of ending at the square's edge.
    """
    n = len(photos)
    centre = boxes[:, :2] * 2 - 1  # grid units, [-1, 1]
    half = boxes[:, 2]  # a side of s shares spans 2s grid units: half of it is s
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([1 / half, zero, -centre[:, 0] / half], 1),
                         torch.stack([zero, 1 / half, -centre[:, 1] / half], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    pasted = F.grid_sample(photos, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    extended = F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False)
    extended = extended * torch.exp(-_squared_distance(pasted, skin) / 0.01)
    below = (grid[..., 1] > 1).unsqueeze(1) & (grid[..., 0].abs() <= 1).unsqueeze(1)
    return pasted, torch.where(below, extended, inside)


def synthetic_frames(photos: torch.Tensor, generator: torch.Generator, config: FinderConfig = FinderConfig(),
                     size: int = FINDER_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (N x 3 x S x S in [0, 1]) made from SIGNS photos (N x 3 x H x W in [0, 1]) and their answers
    (N x 3: the pasted photo's centre x, centre y and side, as shares of the frame side)."""
    n = len(photos)
    masks = hand_mask(photos)
    side = torch.exp(torch.empty(n).uniform_(math.log(config.side[0]), math.log(config.side[1]),
                                             generator=generator))
    # The centre keeps the square inside the frame, give or take a tenth of its side.
    slack = (1 - side * 0.8).clamp(min=0)
    centre = side.unsqueeze(1) * 0.4 + torch.rand(n, 2, generator=generator) * slack.unsqueeze(1)
    boxes = torch.cat([centre, side.unsqueeze(1)], 1)
    backgrounds = procedural_backgrounds(n, size, size, generator)
    blur = torch.rand(n, generator=generator) < 0.3
    backgrounds[blur] = F.avg_pool2d(backgrounds[blur], 5, 1, 2, count_include_pad=False)
    hand_colour = _skin_colour(photos, masks)
    skin = hand_colour * (0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator))
    distract = (torch.rand(n, generator=generator) < config.distractor_probability).view(n, 1, 1, 1)
    (faces, features), arms = _faces(n, size, generator), _bars(n, size, generator)
    shade = torch.rand(n, 1, 1, 1, generator=generator) * 0.15
    distractors = torch.maximum(faces, arms) * distract
    backgrounds = torch.lerp(backgrounds, (skin - shade).clamp(0, 1).expand_as(backgrounds), distractors)
    backgrounds = torch.lerp(backgrounds, backgrounds * 0.25, features * distract)
    # Real hands are often lit from behind, darker and grayer than the wall: each hand gets its own light.
    light = 0.35 + 0.8 * torch.rand(n, 1, 1, 1, generator=generator)
    gray = photos.mean(1, keepdim=True)
    lit = torch.lerp(gray, photos, 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=generator)) * light
    pasted, pasted_masks = _paste(lit.clamp(0, 1), masks, hand_colour * light, boxes, size)
    frames = pasted_masks * pasted + (1 - pasted_masks) * backgrounds
    whole = torch.rand(n, generator=generator) < config.whole_probability
    frames[whole] = F.interpolate(photos[whole], (size, size), mode="bilinear", align_corners=False)
    boxes[whole] = torch.tensor([0.5, 0.5, 1.0])
    band = (torch.rand(n, generator=generator) < config.band_probability) & ~whole
    edge = size // 8  # a 4:3 frame padded to a square: an eighth of the side above and below
    border = frames[:, :, edge, :].median(2).values[:, :, None, None]
    rows = torch.arange(size).view(1, 1, size, 1)
    in_band = band.view(n, 1, 1, 1) & ((rows < edge) | (rows >= size - edge))
    frames = torch.where(in_band, border.expand_as(frames), frames)
    return random_colour(frames, AugmentConfig(), generator), boxes


def targets(boxes: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per frame: the cell its square is centred in (flat index), the centre's offset in it, the log side."""
    scaled = (boxes[:, :2] * grid).clamp(0, grid - 1e-4)
    cell = scaled.floor()
    return (cell[:, 1] * grid + cell[:, 0]).long(), scaled - cell, torch.log(boxes[:, 2])


def loss_of(outputs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    n, _, grid, _ = outputs.shape
    cell, offset, log_side = targets(boxes, grid)
    flat = outputs.reshape(n, 4, -1)
    at = flat[torch.arange(n), :, cell]  # N x 4
    centre = F.cross_entropy(flat[:, 0], cell)
    offsets = F.binary_cross_entropy_with_logits(at[:, 1:3], offset)
    return centre + offsets + F.smooth_l1_loss(at[:, 3], log_side, beta=0.1)


def iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Intersection over union of squares given as (centre x, centre y, side), N x 3 each."""
    def corners(b):
        return b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    (low1, high1), (low2, high2) = corners(first), corners(second)
    overlap = (torch.minimum(high1, high2) - torch.maximum(low1, low2)).clamp(min=0).prod(1)
    return overlap / (first[:, 2] ** 2 + second[:, 2] ** 2 - overlap)


def fit_finder(photos: torch.Tensor, seed: int, config: FinderConfig = FinderConfig()) -> HandFinder:
    """Train a finder on synthetic frames made from `photos` (uint8 N x 3 x H x W SIGNS photos)."""
    generator = torch.Generator().manual_seed(seed + 1_000_003)  # its own stream: the classifier's stays put
    torch.manual_seed(seed)
    finder = HandFinder()
    optimizer = torch.optim.AdamW(finder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.steps,
                                                   pct_start=0.1)
    finder.train()
    running = None
    for step in range(config.steps):
        index = torch.randint(len(photos), (config.batch_size,), generator=generator)
        flip = torch.rand(config.batch_size, generator=generator) < 0.5
        batch = photos[index].float().div_(255)
        batch[flip] = batch[flip].flip(3)
        frames, boxes = synthetic_frames(batch, generator, config)
        loss = loss_of(finder(frames), boxes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}/{config.steps} loss={running:.4f}", file=sys.stderr, flush=True)
    return finder.eval()


# --- measuring -------------------------------------------------------------------------------


def padded(path: Path) -> Image.Image:
    """The photo as prepare_image sees it before resizing: RGB, upright, padded to a square."""
    return preprocess._pad_to_square(decoding._to_rgb(ImageOps.exif_transpose(Image.open(path))))


def crop_to_hand(finder: HandFinder, image: Image.Image) -> Image.Image:
    """The square where the finder sees the hand (moved inside the photo), or the photo when it is whole."""
    small = np.array(image.resize((FINDER_SIZE, FINDER_SIZE), Image.Resampling.BILINEAR))
    x, y, side = find(finder, torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255)[0].tolist()
    if side >= WHOLE_FRAME:
        return image
    width = image.size[0]
    side *= width
    left = min(max(x * width - side / 2, 0), width - side)
    top = min(max(y * width - side / 2, 0), width - side)
    return image.crop((round(left), round(top), round(left + side), round(top + side)))


def accuracy(model, images: list[torch.Tensor], labels: list[str]) -> tuple[float, dict[str, float]]:
    answers = [model.classes[i] for i in predict(model, torch.stack(images)).argmax(1)]
    right = [a == b for a, b in zip(answers, labels)]
    per_class = {c: float(np.mean([r for r, b in zip(right, labels) if b == c])) for c in sorted(set(labels))}
    return float(np.mean(right)), per_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=FinderConfig.steps, help="training steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--every", type=int, default=2, help="measure every N-th real photo (default: %(default)s)")
    parser.add_argument("--data", default=None, help="SIGNS data (default: $SIGNS_DATA or ../shared/data/signs)")
    args = parser.parse_args()
    model = load_model(args.model)
    splits = datasets.load_splits(args.data)
    started = time.perf_counter()
    finder = fit_finder(splits.train.images, args.seed, FinderConfig(steps=args.steps))
    print(f"trained in {time.perf_counter() - started:.0f} s ({args.steps} steps)")
    test = splits.test.images.float() / 255
    frames, boxes = synthetic_frames(test, torch.Generator().manual_seed(123))
    overlap = iou(find(finder, frames), boxes)
    print(f"SIGNS test hands pasted into synthetic frames: IoU median {overlap.median():.3f}, "
          f">= 0.5 on {(overlap >= 0.5).float().mean():.1%}")
    print(f"SIGNS test photos left whole: {(find(finder, test)[:, 2] >= WHOLE_FRAME).float().mean():.1%}")
    real = Path(args.data or datasets.default_data_path()).parent / "real"
    for name in ("hands_frames", "hands_crops"):
        files = datasets.image_files(real / name)[:: args.every]
        labels = [f.parent.name for f in files]
        photos = [padded(f) for f in files]
        crops = [crop_to_hand(finder, p) for p in photos]
        whole = np.mean([c is p for c, p in zip(crops, photos)])
        for label, images in (("plain prepare_image", photos), ("hand finder", crops)):
            total, per_class = accuracy(model, [preprocess.prepare_image(i) for i in images], labels)
            classes = ", ".join(f"{c}: {v:.0%}" for c, v in per_class.items())
            print(f"{name} ({len(files)}), {label}: {total:.1%} ({classes})")
        print(f"{name}: left whole by the finder: {whole:.1%}")


if __name__ == "__main__":
    main()
