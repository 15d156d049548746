"""The one preprocessing path: every image the model sees, in training, evaluation, prediction and the API.

`frame` decodes, orients, converts, cuts the hand out (hands/), pads to square and resizes to uint8; `scale`
is uint8 -> float in [0, 1], the original's /255. `prepare` is the two together for a single image, with
where the network looked (`Framing`); `prepare_image` is its image alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from signs_resnet.data.decoding import MAX_PIXELS, ImageError, _to_rgb, open_image
from signs_resnet.hands.detector import find_hand
from signs_resnet.hands.geometry import FRAMING, Hand
from signs_resnet.hands.model_files import HandModelError
from signs_resnet.hands.reading import Reading

IMAGE_SIZE = 64
# What a found hand is cut out onto: the SIGNS photos' background, the median of their border colours (the
# network knows hands on it; docs/robustness.md, "Cutting the hand out").
BACKGROUND = (223, 218, 210)
PREPROCESSING = {
    "hand": f"photos larger than the input: the hand cut out from its landmarks onto {BACKGROUND}, in a square "
            f"{FRAMING}x the landmarks (hands/)",
    "resize": "pad to square with the median border colour, then Lanczos to the input size",
    "scale": "x / 255",
    "layout": "NCHW float32 RGB",
}


def _border_colour(image: Image.Image) -> tuple[int, ...]:
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return tuple(int(c) for c in np.median(border, axis=0))


def _pad_to_square(image: Image.Image, size: int) -> Image.Image:
    """The photo padded to a square with its border's median colour; a photo over 16 times larger than `size`
    reduced by a whole factor first (to 8-16 times `size`, plenty for the resize to `size`), so that a long
    thin photo never builds a huge square canvas (40000x70 pixels would be 40000x40000)."""
    factor = max(image.size) // (8 * size)
    if factor >= 2:
        image = image.reduce(factor)
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    return ImageOps.pad(image, (side, side), color=_border_colour(image), centering=(0.5, 0.5))


@dataclass(frozen=True)
class Framing:
    """Where the network looked in a photo. `searched`: the photo was larger than the network's input, so
    the hand was looked for (photos at the input size or smaller, such as SIGNS', are read as they are);
    `score`: the hand finder's certainty, None when it found no hand; `crop`: the square the network read
    (left, top, right, bottom in the photo's pixels after EXIF orientation; it may reach past the edges,
    painted like the background), None when it read the whole photo; `reading`: what the hand's points show
    (Hand.reading: each finger held up, an O, each count's probability), None without a hand; `points`: the
    hand's 21 landmarks (x, y in the same pixels as `crop`), None without a hand; `tracked`: the hand was found
    where the previous frame's points had it (a stream's), without the palm detector (HandFinder.find)."""

    searched: bool = False
    score: float | None = None
    crop: tuple[int, int, int, int] | None = None
    reading: Reading | None = None
    points: tuple[tuple[float, float], ...] | None = None
    tracked: bool = False

    @property
    def fingers(self) -> int | None:
        """The most probable count of fingers held up (Reading.count), None without a reading."""
        return None if self.reading is None else self.reading.count

    @property
    def hand_found(self) -> bool:
        """Whether a hand was found: False too where none was looked for (a photo no larger than the input, an
        image tensor). An answer without a hand is never confident (answer.is_confident)."""
        return self.score is not None


def _cut_out(image: Image.Image, hand: Hand, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """The box of the photo with everything but the hand (Hand.silhouette) painted BACKGROUND, past the
    photo's edges too. A box four or more times larger than `size` is cut from the photo reduced by a whole
    factor first (to 2-4 times `size`, plenty for the resize to `size`): a close-up in a huge photo never builds a
    huge canvas, and a silhouette is drawn and blurred at a hundred or two pixels, not thousands
    (docs/performance.md, "Finding the hand")."""
    factor = (box[2] - box[0]) // (2 * size)
    if factor >= 2:
        image, hand = image.reduce(factor), Hand(hand.points / factor, hand.score, hand.world)
        left, top = round(box[0] / factor), round(box[1] / factor)
        box = (left, top, left + round((box[2] - box[0]) / factor), top + round((box[3] - box[1]) / factor))
    left, top, right, bottom = box
    canvas = Image.new("RGB", (right - left, bottom - top), BACKGROUND)
    inside = (max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height))
    window = (inside[0] - left, inside[1] - top, inside[2] - left, inside[3] - top)  # the photo's part of it
    silhouette = hand.silhouette(canvas.size, (left, top)).crop(window)
    canvas.paste(image.crop(inside), window[:2], silhouette)  # the photo through the silhouette
    return canvas


def frame_hand(image: Image.Image, size: int = IMAGE_SIZE,
               previous: np.ndarray | None = None) -> tuple[Image.Image, Framing]:
    """An oriented RGB photo as the network reads it: the hand (hands/) cut out onto SIGNS' background in
    a square around it, or the photo whole when it is no larger than `size` or has no hand. `previous`: the
    hand's points in the frame before, in this photo's pixels, where it is looked for first."""
    if max(image.size) <= size:
        return image, Framing()
    hand = find_hand(image, previous)
    if hand is None:
        return image, Framing(searched=True)
    left, top, right, bottom = hand.box
    if right <= 0 or bottom <= 0 or left >= image.width or top >= image.height:
        return image, Framing(searched=True)  # points off the photo: no hand in it
    box = hand.square()
    points = tuple((float(x), float(y)) for x, y in hand.points)
    return _cut_out(image, hand, box, size), Framing(True, hand.score, box, hand.reading(), points, hand.tracked)


def frame(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
          max_pixels: int = MAX_PIXELS, previous: np.ndarray | None = None) -> tuple[np.ndarray, Framing]:
    """Decode, apply EXIF orientation, convert to RGB, cut the hand out, pad to square, resize:
    uint8 size x size x 3, and where the network looked. `previous`: the hand's 21 points (x, y) in the frame
    before, in the same pixels as Framing.points, where the hand is looked for first (a stream's tracking)."""
    name = str(source) if isinstance(source, (str, Path)) else "image"
    image = source if isinstance(source, Image.Image) else open_image(source, max_pixels)
    try:
        full_size = max(image.size)
        if image.format == "JPEG":
            # Decode big JPEGs at a reduced scale (much faster), keeping enough pixels for a hand that is a
            # small part of the photo.
            image.draft("RGB", (size * 8, size * 8))
        reduction = full_size / max(image.size)
        image = _to_rgb(ImageOps.exif_transpose(image))
        if previous is not None:  # into the pixels of the photo as decoded (a big JPEG's reduced draft)
            previous = np.asarray(previous, dtype=np.float32) / reduction
        image, framing = frame_hand(image, size, previous)
        if framing.crop is not None and reduction != 1:
            framing = replace(framing, crop=tuple(round(v * reduction) for v in framing.crop),
                              points=tuple((x * reduction, y * reduction) for x, y in framing.points))
        image = _pad_to_square(image, size)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        return np.array(image, dtype=np.uint8), framing
    except HandModelError:
        raise  # the install is broken, not the photo
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: cannot decode image ({error})", "corrupt_image") from None


def load_rgb(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`frame`'s pixels alone: uint8 size x size x 3."""
    return frame(source, size, max_pixels)[0]


def scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N x 3 x H x W or N x H x W x 3 numpy-style) to float32 N x 3 x H x W in [0, 1]."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images.float().div_(255)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 batch on the device -> float model input in channels-last memory layout."""
    return scale(images).contiguous(memory_format=torch.channels_last)


def prepare(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
            max_pixels: int = MAX_PIXELS, previous: np.ndarray | None = None) -> tuple[torch.Tensor, Framing]:
    """One image to the model's input, float32 3 x size x size in [0, 1], and where the network looked;
    `previous`: the hand's points in the frame before, where it is looked for first (`frame`)."""
    pixels, framing = frame(source, size, max_pixels, previous)
    return scale(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0))[0], framing


def prepare_image(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
                  max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """One image, any format or mode, to the model's input: float32 3 x size x size in [0, 1]."""
    return prepare(source, size, max_pixels)[0]
