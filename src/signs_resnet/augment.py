"""Batched, seeded augmentation on float image tensors (N x 3 x H x W in [0, 1]), in plain torch.

SIGNS photos are square, hand-centred, on a light background; users send phone photos. So each
image is randomly rotated, zoomed, shifted and mirrored (a left hand shows the same count), and its
colours are jittered (lighting, white balance, skin tone), all on the whole batch at once.
Optionally (`background_probability`), a share of each batch first has its plain background replaced:
the hand and arm are cut out by their colour distance from the photo's own border colour (a soft mask)
and composited onto a procedural background (colour fields, gradients, stripes, rectangles, noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    # Chosen on val_signs (docs/recipe.md, "Hold-out runs"): mild geometry, since SIGNS photos are framed
    # alike and stronger geometry cost accuracy in a short budget, except zooming out, since phone photos
    # frame the hand smaller (it lifted the portrait-frame row, clean val_signs unchanged); strong colour,
    # since phone photos are lit every which way (half this strength failed most darker, warmer photos).
    rotation_degrees: float = 7.5
    zoom: tuple[float, float] = (0.8, 1.075)  # < 1 zooms out, > 1 in
    shift: float = 0.05  # fraction of the image side
    flip: bool = True
    brightness: float = 0.375
    contrast: float = 0.375
    saturation: float = 0.45
    hue_degrees: float = 15.0
    grayscale_probability: float = 0.15
    # The share of images composited onto a procedural background (0: off, and no random numbers drawn).
    background_probability: float = 0.0
    background_blur_probability: float = 0.3  # of those, how many backgrounds are also blurred


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def random_affine(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n = len(images)
    angle = _uniform(n, -1, 1, generator) * math.radians(config.rotation_degrees)
    zoom = torch.exp(_uniform(n, math.log(config.zoom[0]), math.log(config.zoom[1]), generator))
    shift = _uniform(2 * n, -1, 1, generator).view(n, 2) * config.shift * 2  # grid units span 2
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if config.flip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output coordinates to input coordinates.
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_colour(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n = len(images)

    def factor(amount: float) -> torch.Tensor:
        return _uniform(n, 1 - amount, 1 + amount, generator).view(n, 1, 1, 1).to(images)

    gray_weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1).to(images)
    images = images * factor(config.brightness)
    mean = (images * gray_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    images = (images - mean) * factor(config.contrast) + mean
    gray = (images * gray_weights).sum(1, keepdim=True)
    images = (images - gray) * factor(config.saturation) + gray
    # Hue: rotate the chroma plane around the gray axis (Rodrigues' rotation about (1,1,1)/sqrt(3)).
    angle = _uniform(n, -1, 1, generator) * math.radians(config.hue_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = 1 / math.sqrt(3)
    a = cos + (1 - cos) / 3
    b = (1 - cos) / 3 - k * sin
    c = (1 - cos) / 3 + k * sin
    rotation = torch.stack([torch.stack([a, b, c], 1), torch.stack([c, a, b], 1), torch.stack([b, c, a], 1)], 1)
    images = torch.einsum("nij,njhw->nihw", rotation.to(images), images)
    to_gray = (torch.rand(n, generator=generator) < config.grayscale_probability).view(n, 1, 1, 1).to(images.device)
    images = torch.where(to_gray, (images * gray_weights).sum(1, keepdim=True).expand_as(images), images)
    return images.clamp_(0, 1)


# --- backgrounds ------------------------------------------------------------------------------

# A pixel is hand where its colour is far from the border colour's ray through black (so the background's
# shadows, darker copies of its colour, stay background): the distance across that ray, plus this weight
# times how much darker than the border the pixel is. Chosen by eye on val_signs masks.
MASK_DARKNESS_WEIGHT = 0.3
MASK_THRESHOLD, MASK_SOFTNESS = 0.08, 0.02


def border_colour(images: torch.Tensor) -> torch.Tensor:
    """Each image's median border colour, N x 3 x 1 x 1."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], 2)
    return border.median(2).values[:, :, None, None]


def hand_mask(images: torch.Tensor) -> torch.Tensor:
    """A soft mask (N x 1 x H x W in [0, 1], 1 = hand) of what differs from each photo's plain background."""
    border = border_colour(images)
    direction = border / border.norm(dim=1, keepdim=True).clamp(min=1e-3)
    along = (images * direction).sum(1, keepdim=True)
    across = (images - along * direction).norm(dim=1, keepdim=True)
    darker = (border.norm(dim=1, keepdim=True) - along).clamp(min=0)
    mask = torch.sigmoid((across + MASK_DARKNESS_WEIGHT * darker - MASK_THRESHOLD) / MASK_SOFTNESS)
    mask = -F.max_pool2d(-F.max_pool2d(mask, 3, 1, 1), 3, 1, 1)  # close: fill specks, keep finger gaps
    return F.avg_pool2d(mask, 3, 1, 1, count_include_pad=False)  # soften the edge


def _colours(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random colours, most of them muted like walls, furniture and clothes: a gray level moved towards a
    random colour by a saturation that is small more often than not."""
    gray = torch.rand(n, 1, 1, 1, generator=generator)
    colour = torch.rand(n, 3, 1, 1, generator=generator)
    saturation = torch.rand(n, 1, 1, 1, generator=generator) ** 2
    return torch.lerp(gray.expand(n, 3, 1, 1), colour, saturation)


def procedural_backgrounds(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """n backgrounds N x 3 x H x W in [0, 1], each one of: a colour field, a gradient, stripes, rectangles
    (furniture, clothes, screens) or smooth noise (clutter). Every kind is drawn for every image and one is
    kept per image, so the random numbers drawn depend on n only."""
    y = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    angle = torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi
    along = torch.cos(angle) * x + torch.sin(angle) * y  # a random direction across the image
    first, second = _colours(n, generator), _colours(n, generator)
    field = first.expand(n, 3, height, width)
    gradient = torch.lerp(first, second, ((along + 1.4) / 2.8).clamp(0, 1))
    frequency = 1 + torch.rand(n, 1, 1, 1, generator=generator) * 6
    stripes = torch.lerp(first, second, (torch.sin(along * frequency * math.pi) > 0).float())
    rectangles = first.expand(n, 3, height, width).clone()
    for _ in range(4):
        corners = torch.rand(n, 4, generator=generator) * 2.4 - 1.2
        low, high = torch.minimum(corners[:, :2], corners[:, 2:]), torch.maximum(corners[:, :2], corners[:, 2:])
        inside = ((x >= low[:, 0, None, None, None]) & (x <= high[:, 0, None, None, None])
                  & (y >= low[:, 1, None, None, None]) & (y <= high[:, 1, None, None, None]))
        rectangles = torch.where(inside, _colours(n, generator), rectangles)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    fine = torch.rand(n, 3, 16, 16, generator=generator)
    noise = (0.7 * F.interpolate(coarse, (height, width), mode="bicubic", align_corners=False)
             + 0.3 * F.interpolate(fine, (height, width), mode="bilinear", align_corners=False)).clamp(0, 1)
    noise = torch.lerp(noise.mean(1, keepdim=True).expand_as(noise), noise, torch.rand(n, 1, 1, 1, generator=generator))
    kinds = torch.stack([field, gradient, stripes, rectangles, noise], 1)  # N x kinds x 3 x H x W
    choice = torch.randint(len(kinds[0]), (n,), generator=generator)
    return kinds[torch.arange(n), choice]


def composite_backgrounds(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A `background_probability` share of the batch with each photo's background swapped for a procedural one."""
    n, _, height, width = images.shape
    chosen = (torch.rand(n, generator=generator) < config.background_probability).view(n, 1, 1, 1)
    backgrounds = procedural_backgrounds(n, height, width, generator).to(images)
    blurred = F.avg_pool2d(backgrounds, 5, 1, 2, count_include_pad=False)
    blur = (torch.rand(n, generator=generator) < config.background_blur_probability).view(n, 1, 1, 1)
    backgrounds = torch.where(blur.to(images.device), blurred, backgrounds)
    mask = hand_mask(images)
    composited = mask * images + (1 - mask) * backgrounds
    return torch.where(chosen.to(images.device), composited, images)


def augment(images: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """A randomly transformed copy of a float batch; the same generator state gives the same result."""
    if config.background_probability > 0:
        images = composite_backgrounds(images, config, generator)
    return random_colour(random_affine(images, config, generator), config, generator)
