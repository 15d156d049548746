"""Opening an image file safely: refuse non-images and decompression bombs before decoding, and any Pillow
mode to 8-bit RGB."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# Refuse images over this many pixels before decoding them (a decompression bomb otherwise).
MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An input that is not a usable image. `code` names the reason for API clients:
    "not_an_image", "too_many_pixels" or "corrupt_image"."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image without decoding it; refuse non-images and images over `max_pixels`."""
    name = str(source) if isinstance(source, (str, Path)) else "image"
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (not a format Pillow knows)", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: not a readable image ({error})", "too_many_pixels") from None
    except (OSError, ValueError) as error:  # Pillow's format readers raise ValueError on broken headers too
        raise ImageError(f"{name}: cannot read image ({error})", "corrupt_image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{name}: image of {width}x{height} pixels is over the limit of {max_pixels} pixels",
                         "too_many_pixels")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white like the SIGNS background."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():  # a float image can hold NaN or infinity: no pixel value
            raise ValueError("pixels that are not finite numbers")
        top = 1.0 if image.mode == "F" and values.max(initial=0) <= 1 else (255.0 if values.max(initial=0) <= 255 else 65535.0)
        image = Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")
