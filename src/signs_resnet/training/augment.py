"""Batched, seeded augmentation on float image tensors (N x 3 x H x W in [0, 1]), in plain torch.

SIGNS photos are square, hand-centred, on a light background; users send phone photos. So each
image is randomly rotated, zoomed, shifted and mirrored (a left hand shows the same count), and its
colours are jittered (lighting, white balance, skin tone), all on the whole batch at once.
Optionally (`background_probability`; the default training recipe sets it, training.config.TrainConfig), a share of
each batch first has its plain background replaced:
the hand and arm are cut out by their colour distance from the photo's own border colour (a soft mask)
and composited onto a procedural background (colour fields, gradients, stripes, rectangles, noise).
Optionally (`camera_probability`: off in the recipe, kept to simulate webcam photos from SIGNS ones), a
share of each batch is last made to look like a webcam's: less resolution, blur, noise.
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
    # The share of images composited onto a procedural background (0: off, and no random numbers drawn); the
    # training recipe sets it per step (training.train.scheduled).
    background_probability: float = 0.0
    background_blur_probability: float = 0.3  # of those, how many backgrounds are also blurred
    # The share of images made to look as if taken by a webcam (random_camera): resolution lost, blurred, noisy; 0: off,
    # and no random numbers drawn.
    camera_probability: float = 0.0


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


# --- camera ----------------------------------------------------------------------------------

# A webcam photo of a hand is cut from a larger, softer frame than SIGNS' sharp 64x64 photos: each chosen
# image is shrunk to a side of CAMERA_MIN_SIDE..64 pixels (in steps of 4) and brought back, blurred with a
# Gaussian of sigma up to CAMERA_MAX_BLUR pixels and given sensor noise of up to CAMERA_MAX_NOISE. As a training
# augmentation it was within run-to-run noise on the real sets, so the recipe leaves it off (docs/robustness.md,
# "Levers measured").
CAMERA_MIN_SIDE, CAMERA_MAX_BLUR, CAMERA_MAX_NOISE = 20, 1.2, 0.04


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred with its own sigma (N, in pixels; 0 leaves it as it is), edges replicated; the
    kernel reaches 3 of the largest sigma."""
    n, channels, height, width = images.shape
    radius = max(1, math.ceil(3 * float(sigma.max()))) if len(sigma) else 1
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma.to(images).clamp(min=1e-3)[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)  # (N * C) x taps
    x = images.reshape(1, n * channels, height, width)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * channels)
    return x.reshape(n, channels, height, width)


def random_camera(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A `camera_probability` share of the batch with lost resolution, blur and noise, in [0, 1].

    The random numbers drawn depend on the batch's shape only."""
    n, _, height, width = images.shape
    chosen = torch.rand(n, generator=generator) < config.camera_probability
    sides = CAMERA_MIN_SIDE + 4 * torch.randint(0, (height - CAMERA_MIN_SIDE) // 4 + 1, (n,), generator=generator)
    sigma = torch.rand(n, generator=generator) * CAMERA_MAX_BLUR
    noise = torch.randn(images.shape, generator=generator) * (torch.rand(n, generator=generator) * CAMERA_MAX_NOISE
                                                              ).view(n, 1, 1, 1)
    index = torch.nonzero(chosen).flatten()
    if len(index) == 0:
        return images
    on_device = index.to(images.device)
    x = images[on_device]
    for side in sides[index].unique().tolist():  # one resize per side below the photo's (at most 11 at 64 px)
        same = torch.nonzero(sides[index] == side).flatten().to(images.device)
        if side < height:
            x[same] = F.interpolate(F.interpolate(x[same], size=(side, side * width // height), mode="area"),
                                    size=(height, width), mode="bilinear", align_corners=False)
    x = gaussian_blur(x, sigma[index]) + noise[index].to(x)
    out = images.clone()
    out[on_device] = x.clamp(0, 1)
    return out


# --- backgrounds ------------------------------------------------------------------------------

# A pixel is hand where its colour is far from the border colour's ray through black (so the background's
# shadows, darker copies of its colour, stay background): the distance across that ray, plus this weight
# times how much darker than the border the pixel is. Chosen by eye on val_signs masks.
MASK_DARKNESS_WEIGHT = 0.3
MASK_THRESHOLD, MASK_SOFTNESS = 0.08, 0.02
# ... and only where it has colour: skin is saturated, the hand's shadow on the wall is gray. Kept as hand, a
# shadow pasted onto a new background is an extra finger, and a SIGNS "4" was read as "5" (docs/robustness.md,
# "The default: backgrounds, falling to none"). Chosen by eye on training photos of "2" and "4".
SATURATION_THRESHOLD, SATURATION_SOFTNESS = 0.12, 0.03


def border_colour(images: torch.Tensor) -> torch.Tensor:
    """Each image's median border colour, N x 3 x 1 x 1."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], 2)
    return border.median(2).values[:, :, None, None]


def _length(colours: torch.Tensor) -> torch.Tensor:
    """Euclidean length over the channel dimension (Tensor.norm(dim=1) is 100x slower on CPU here)."""
    return (colours * colours).sum(1, keepdim=True).sqrt()


def saturation(images: torch.Tensor) -> torch.Tensor:
    """HSV saturation, N x 1 x H x W: 0 for gray, 1 for a pure colour."""
    high, low = images.amax(1, keepdim=True), images.amin(1, keepdim=True)
    return (high - low) / high.clamp(min=1e-3)


def hand_mask(images: torch.Tensor) -> torch.Tensor:
    """A soft mask (N x 1 x H x W in [0, 1], 1 = hand) of what differs from each photo's plain background
    and has colour (not the hand's gray shadow)."""
    border = border_colour(images)
    direction = border / _length(border).clamp(min=1e-3)
    along = (images * direction).sum(1, keepdim=True)
    across = _length(images - along * direction)
    darker = (_length(border) - along).clamp(min=0)
    mask = torch.sigmoid((across + MASK_DARKNESS_WEIGHT * darker - MASK_THRESHOLD) / MASK_SOFTNESS)
    mask = mask * torch.sigmoid((saturation(images) - SATURATION_THRESHOLD) / SATURATION_SOFTNESS)
    mask = -F.max_pool2d(-F.max_pool2d(mask, 3, 1, 1), 3, 1, 1)  # close: fill specks, keep finger gaps
    return F.avg_pool2d(mask, 3, 1, 1, count_include_pad=False)  # soften the edge


def _colours(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random colours, most of them muted like walls, furniture and clothes: a gray level moved towards a
    random colour by a saturation that is small more often than not."""
    gray = torch.rand(n, 1, 1, 1, generator=generator)
    colour = torch.rand(n, 3, 1, 1, generator=generator)
    saturation = torch.rand(n, 1, 1, 1, generator=generator) ** 2
    return torch.lerp(gray.expand(n, 3, 1, 1), colour, saturation)


def _background_parameters(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random number of n backgrounds, drawn in a fixed order whichever backgrounds are then built."""
    parameters = {"angle": torch.rand(n, 1, 1, 1, generator=generator) * 2 * math.pi,
                  "first": _colours(n, generator), "second": _colours(n, generator),
                  "frequency": 1 + torch.rand(n, 1, 1, 1, generator=generator) * 6}
    for k in range(4):
        parameters[f"corners{k}"] = torch.rand(n, 4, generator=generator) * 2.4 - 1.2
        parameters[f"colour{k}"] = _colours(n, generator)
    parameters["coarse"] = torch.rand(n, 3, 4, 4, generator=generator)
    parameters["fine"] = torch.rand(n, 3, 16, 16, generator=generator)
    parameters["noise_saturation"] = torch.rand(n, 1, 1, 1, generator=generator)
    parameters["kind"] = torch.randint(len(BACKGROUND_KINDS), (n,), generator=generator)
    return parameters


def _render(kind: str, p: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Backgrounds of one kind from their parameters `p` (one row per background)."""
    n = len(p["first"])
    y = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    x = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    along = torch.cos(p["angle"]) * x + torch.sin(p["angle"]) * y  # a random direction across the image
    if kind == "field":
        return p["first"].expand(n, 3, height, width)
    if kind == "gradient":
        return torch.lerp(p["first"], p["second"], ((along + 1.4) / 2.8).clamp(0, 1))
    if kind == "stripes":
        return torch.lerp(p["first"], p["second"], (torch.sin(along * p["frequency"] * math.pi) > 0).float())
    if kind == "rectangles":
        rectangles = p["first"].expand(n, 3, height, width)
        for k in range(4):
            corners = p[f"corners{k}"]
            low, high = torch.minimum(corners[:, :2], corners[:, 2:]), torch.maximum(corners[:, :2], corners[:, 2:])
            inside = ((x >= low[:, 0, None, None, None]) & (x <= high[:, 0, None, None, None])
                      & (y >= low[:, 1, None, None, None]) & (y <= high[:, 1, None, None, None]))
            rectangles = torch.where(inside, p[f"colour{k}"], rectangles)
        return rectangles
    noise = (0.7 * F.interpolate(p["coarse"], (height, width), mode="bicubic", align_corners=False)
             + 0.3 * F.interpolate(p["fine"], (height, width), mode="bilinear", align_corners=False)).clamp(0, 1)
    return torch.lerp(noise.mean(1, keepdim=True).expand_as(noise), noise, p["noise_saturation"])


BACKGROUND_KINDS = ("field", "gradient", "stripes", "rectangles", "noise")


def _build(parameters: dict[str, torch.Tensor], index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The backgrounds `index` of a parameter draw, each kind built for the backgrounds of that kind only."""
    backgrounds = torch.empty(len(index), 3, height, width)
    kinds = parameters["kind"][index]
    for number, kind in enumerate(BACKGROUND_KINDS):
        rows = torch.nonzero(kinds == number).flatten()
        if len(rows):
            backgrounds[rows] = _render(kind, {k: v[index[rows]] for k, v in parameters.items()}, height, width)
    return backgrounds


def procedural_backgrounds(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """n backgrounds N x 3 x H x W in [0, 1], each one of: a colour field, a gradient, stripes, rectangles
    (furniture, clothes, screens) or smooth noise (clutter)."""
    return _build(_background_parameters(n, generator), torch.arange(n), height, width)


def composite_backgrounds(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A `background_probability` share of the batch with each photo's background swapped for a procedural one.

    The random numbers drawn depend on the batch size only; the pixels are computed for the chosen photos only.
    """
    n, _, height, width = images.shape
    chosen = torch.nonzero(torch.rand(n, generator=generator) < config.background_probability).flatten()
    parameters = _background_parameters(n, generator)
    blur = torch.rand(n, generator=generator) < config.background_blur_probability
    if len(chosen) == 0:
        return images
    backgrounds = _build(parameters, chosen, height, width).to(images)
    photos = images[chosen.to(images.device)]
    mask = hand_mask(photos)
    blurred = torch.nonzero(blur[chosen]).flatten().to(images.device)
    backgrounds[blurred] = F.avg_pool2d(backgrounds[blurred], 5, 1, 2, count_include_pad=False)
    out = images.clone()
    out[chosen.to(images.device)] = mask * photos + (1 - mask) * backgrounds
    return out


def augment(images: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """A randomly transformed copy of a float batch; the same generator state gives the same result."""
    if config.background_probability > 0:
        images = composite_backgrounds(images, config, generator)
    images = random_colour(random_affine(images, config, generator), config, generator)
    if config.camera_probability > 0:
        images = random_camera(images, config, generator)
    return images
