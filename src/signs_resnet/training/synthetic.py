"""Training photos made from SIGNS' own: as the product reads them at a camera's resolution (the hand cut
out), and 5s with the thumb painted out (a 4 as people show it)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageChops, ImageFilter

from signs_resnet.data.preprocess import frame, to_input
from signs_resnet.hands.detector import find_hand, usable_cores
from signs_resnet.training import synthetic
from signs_resnet.training.augment import gaussian_blur

# The wall behind a painted-out thumb (thumbless_photos): a blur this share of the photo's side wide.
WALL_BLUR = 0.1


def cut_out_photos(images: torch.Tensor, factor: int = 4) -> tuple[torch.Tensor, int]:
    """Square training photos (uint8 N x 3 x S x S) as the product reads them at a camera's resolution: each
    enlarged `factor` times (bicubic) and through `frame` (its hand found and cut out onto BACKGROUND), or
    the photo as it is where no hand is found; and how many hands were found. The finder's threads share
    the work."""

    size = images.shape[-1]

    def cut(image: torch.Tensor) -> tuple[np.ndarray, bool]:
        photo = Image.fromarray(image.permute(1, 2, 0).numpy())
        pixels, framing = frame(photo.resize((size * factor, size * factor), Image.Resampling.BICUBIC), size)
        return (pixels, True) if framing.crop is not None else (np.asarray(photo), False)

    with ThreadPoolExecutor(usable_cores()) as pool:
        done = list(pool.map(cut, images.cpu()))
    cut_outs = torch.from_numpy(np.stack([pixels for pixels, _ in done])).permute(0, 3, 1, 2).contiguous()
    return cut_outs, sum(found for _, found in done)


def thumbless_photos(images: torch.Tensor, factor: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Square training photos (uint8 N x 3 x S x S) with the thumb painted out, and which of them had a hand
    found (the others come back as they are). A SIGNS "5" without its thumb is a "4" as people show it, the
    thumb folded out of sight, which SIGNS' own 4s (thumb across the palm) never show (docs/robustness.md,
    "A 5 without its thumb")."""
    return fingers_painted_out(images, (0,), factor)


def fingers_painted_out(images: torch.Tensor, fingers: tuple[int, ...],
                        factor: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Square photos (uint8 N x 3 x S x S) with the given fingers painted out (0: the thumb ... 4: the little
    finger), and which of them had a hand found (the others come back as they are): a count shown with other
    fingers than SIGNS shows it. Each photo is enlarged `factor` times for the landmark models; the fingers'
    shape (Hand.silhouette less Hand.without_fingers') is drawn there, reduced to the photo and filled with
    the wall around the hand: a blur of the photo weighted away from the hand's silhouette."""
    if len(images) == 0:
        return images, torch.zeros(0, dtype=torch.bool)
    size = images.shape[-1]
    big = (size * factor, size * factor)

    def masks(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        hand = find_hand(Image.fromarray(image.permute(1, 2, 0).numpy()).resize(big, Image.Resampling.BICUBIC))
        if hand is None:
            return None
        whole, rest = hand.silhouette(big), hand.without_fingers(fingers).silhouette(big)
        gone = ImageChops.subtract(whole, rest, scale=0.5)  # twice the difference: the fingers' edge too
        gone = gone.filter(ImageFilter.MaxFilter(2 * factor + 1)).resize((size, size), Image.Resampling.BOX)
        return (np.asarray(gone, np.float32) / 255,
                np.asarray(whole.resize((size, size), Image.Resampling.BOX), np.float32) / 255)

    done = [masks(image) for image in images.cpu()]  # one thread: a few seconds, at every training's start
    found = torch.tensor([m is not None for m in done], dtype=torch.bool)
    empty = np.zeros((size, size), np.float32)
    gone = torch.from_numpy(np.stack([m[0] if m else empty for m in done]))[:, None]
    hand = torch.maximum(torch.from_numpy(np.stack([m[1] if m else empty for m in done]))[:, None], gone)
    photos = images.cpu().float()
    away = (1 - hand) ** 4  # the wall's weight: nothing on the hand, nothing near its blurred edge
    sigma = torch.full((len(photos),), WALL_BLUR * size)
    wall = gaussian_blur(photos * away, sigma) / gaussian_blur(away, sigma).clamp(min=1e-4)
    painted = photos * (1 - gone) + wall * gone
    return painted.round().clamp(0, 255).to(torch.uint8), found


@dataclass(frozen=True)
class Thumbless:
    """The training set's 5s with the thumb painted out (synthetic.thumbless_photos, those whose hand was found),
    and the class they show then ("4")."""

    images: torch.Tensor
    label: int

    @classmethod
    def of(cls, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> Thumbless | str:
        """The thumbless 5s of a training set, or why it has none (the recipe then trains without them: the
        option is on by default, and a data set of other classes is no error)."""
        if "4" not in classes or "5" not in classes:
            return f"the classes are not SIGNS' 4 and 5 ({', '.join(classes)})"
        fives = labels.cpu() == classes.index("5")
        if not fives.any():
            return "the training data holds no photo of a 5"
        painted, found = synthetic.thumbless_photos(images[fives].cpu())
        if not found.any():
            return "no hand was found in any photo of a 5"
        return cls(painted[found], classes.index("4"))

    def swap_in(self, x: torch.Tensor, y: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
        """A float batch with a random `share` of its photos of this class each swapped for a thumbless 5
        drawn at random: the class keeps its share of the batch, and its photos are SIGNS' and these."""
        swapped = (torch.rand(len(x), generator=generator) < share).to(x.device) & (y == self.label)
        drawn = torch.randint(len(self.images), (len(x),), generator=generator).to(self.images.device)
        return torch.where(swapped[:, None, None, None], to_input(self.images[drawn]).to(x.device), x)
