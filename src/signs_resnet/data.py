"""SIGNS data: the original HDF5 files or folders of images, and the one preprocessing path.

Every image the model sees, in training, evaluation, prediction and the API, goes through
`frame` (decode, orient, convert, cut the hand out, pad to square, resize to uint8) and `scale` (uint8 ->
float in [0, 1], the original's /255). `prepare` is the two together for a single image, with where the
network looked (`Framing`); `prepare_image` is its image alone.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np
import torch
from PIL import Image, ImageChops, ImageFilter, ImageOps, UnidentifiedImageError

from .augment import gaussian_blur
from .hands import FRAMING, Hand, HandModelError, find_hand

IMAGE_SIZE = 64
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Refuse images over this many pixels before decoding them (a decompression bomb otherwise).
MAX_PIXELS = 50_000_000
# What a found hand is cut out onto: the SIGNS photos' background, the median of their border colours (the
# network knows hands on it; docs/robustness.md, "Cutting the hand out").
BACKGROUND = (223, 218, 210)
# The wall behind a painted-out thumb (thumbless_photos): a blur this share of the photo's side wide.
WALL_BLUR = 0.1
PREPROCESSING = {
    "hand": f"photos larger than the input: the hand cut out from its landmarks onto {BACKGROUND}, in a square "
            f"{FRAMING}x the landmarks (hands.py)",
    "resize": "pad to square with the median border colour, then Lanczos to the input size",
    "scale": "x / 255",
    "layout": "NCHW float32 RGB",
}


class ImageError(ValueError):
    """An input that is not a usable image. `code` names the reason for API clients:
    "not_an_image", "too_many_pixels" or "corrupt_image"."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class Dataset:
    images: torch.Tensor  # uint8, N x 3 x H x W
    labels: torch.Tensor  # int64, N
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.classes, self.source)


@dataclass
class Splits:
    train: Dataset | None
    val: Dataset | None
    test: Dataset | None


def default_data_path() -> Path:
    """`SIGNS_DATA`, else the development copy in ../shared/data/signs beside the project root."""
    if os.environ.get("SIGNS_DATA"):
        return Path(os.environ["SIGNS_DATA"])
    project_root = Path(__file__).resolve().parents[2]
    return project_root.parent / "shared" / "data" / "signs"


# --- preprocessing ----------------------------------------------------------------------------


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


def _border_colour(image: Image.Image) -> tuple[int, ...]:
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return tuple(int(c) for c in np.median(border, axis=0))


def _pad_to_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    return ImageOps.pad(image, (side, side), color=_border_colour(image), centering=(0.5, 0.5))


def finger_count(label: str) -> int | None:
    """How many fingers a class shows held out, for SIGNS' "1" to "5"; None for any other class: SIGNS' "0" is
    an O whose curled fingers the count was not fitted to (hands.finger_ratios), other models' classes are
    not counts."""
    return int(label) if label in ("1", "2", "3", "4", "5") else None


@dataclass(frozen=True)
class Framing:
    """Where the network looked in a photo. `searched`: the photo was larger than the network's input, so
    the hand was looked for (photos at the input size or smaller, such as SIGNS', are read as they are);
    `score`: the hand finder's certainty, None when it found no hand; `crop`: the square the network read
    (left, top, right, bottom in the photo's pixels after EXIF orientation; it may reach past the edges,
    painted like the background), None when it read the whole photo; `fingers`: how many fingers the hand's
    points show held out (Hand.fingers), None without a hand."""

    searched: bool = False
    score: float | None = None
    crop: tuple[int, int, int, int] | None = None
    fingers: int | None = None

    @property
    def hand_found(self) -> bool:
        """False only when the hand was looked for and not found: such an answer is never confident."""
        return not self.searched or self.score is not None

    def shows(self, label: str) -> bool:
        """Whether the hand's points agree with the class `label`: they show as many fingers held out as it
        counts (finger_count). True without points, and for a class that is no count."""
        return self.fingers is None or finger_count(label) in (None, self.fingers)

    def answer(self) -> dict[str, Any] | None:
        """As answers carry it (schemas.HandFound): found, score, crop, fingers; None when no hand was looked
        for."""
        if not self.searched:
            return None
        return {"found": self.score is not None, "score": None if self.score is None else round(self.score, 4),
                "crop": None if self.crop is None else list(self.crop), "fingers": self.fingers}


def _cut_out(image: Image.Image, hand: Hand, box: tuple[int, int, int, int], size: int) -> Image.Image:
    """The box of the photo with everything but the hand (Hand.silhouette) painted BACKGROUND, past the
    photo's edges too. A box many times larger than `size` is cut from the photo reduced by a whole factor
    first (to 4-8 times `size`, plenty for the resize to `size`): a close-up in a huge photo never builds a
    huge canvas, and a phone photo's silhouette is drawn and blurred at a few hundred pixels, not thousands."""
    factor = (box[2] - box[0]) // (4 * size)
    if factor >= 2:
        image, hand = image.reduce(factor), Hand(hand.points / factor, hand.score)
        box = tuple(round(v / factor) for v in box)
    left, top, right, bottom = box
    canvas = Image.new("RGB", (right - left, bottom - top), BACKGROUND)
    inside = (max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height))
    window = (inside[0] - left, inside[1] - top, inside[2] - left, inside[3] - top)  # the photo's part of it
    silhouette = hand.silhouette(canvas.size, (left, top)).crop(window)
    canvas.paste(image.crop(inside), window[:2], silhouette)  # the photo through the silhouette
    return canvas


def frame_hand(image: Image.Image, size: int = IMAGE_SIZE) -> tuple[Image.Image, Framing]:
    """An oriented RGB photo as the network reads it: the hand (hands.py) cut out onto SIGNS' background in
    a square around it, or the photo whole when it is no larger than `size` or has no hand."""
    if max(image.size) <= size:
        return image, Framing()
    hand = find_hand(image)
    if hand is None:
        return image, Framing(searched=True)
    left, top, right, bottom = hand.box
    if right <= 0 or bottom <= 0 or left >= image.width or top >= image.height:
        return image, Framing(searched=True)  # points off the photo: no hand in it
    box = hand.square()
    return _cut_out(image, hand, box, size), Framing(True, hand.score, box, hand.fingers())


def frame(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
          max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, Framing]:
    """Decode, apply EXIF orientation, convert to RGB, cut the hand out, pad to square, resize:
    uint8 size x size x 3, and where the network looked."""
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
        image, framing = frame_hand(image, size)
        if framing.crop is not None and reduction != 1:
            framing = replace(framing, crop=tuple(round(v * reduction) for v in framing.crop))
        image = _pad_to_square(image)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        return np.array(image, dtype=np.uint8), framing
    except HandModelError:
        raise  # the install is broken, not the photo
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: cannot decode image ({error})", "corrupt_image") from None


def cut_out_photos(images: torch.Tensor, factor: int = 4) -> tuple[torch.Tensor, int]:
    """Square training photos (uint8 N x 3 x S x S) as the product reads them at a camera's resolution: each
    enlarged `factor` times (bicubic) and through `frame` (its hand found and cut out onto BACKGROUND), or
    the photo as it is where no hand is found; and how many hands were found. The finder's threads share
    the work."""
    from concurrent.futures import ThreadPoolExecutor

    size = images.shape[-1]

    def cut(image: torch.Tensor) -> tuple[np.ndarray, bool]:
        photo = Image.fromarray(image.permute(1, 2, 0).numpy())
        pixels, framing = frame(photo.resize((size * factor, size * factor), Image.Resampling.BICUBIC), size)
        return (pixels, True) if framing.crop is not None else (np.asarray(photo), False)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        done = list(pool.map(cut, images.cpu()))
    cut_outs = torch.from_numpy(np.stack([pixels for pixels, _ in done])).permute(0, 3, 1, 2).contiguous()
    return cut_outs, sum(found for _, found in done)


def thumbless_photos(images: torch.Tensor, factor: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Square training photos (uint8 N x 3 x S x S) with the thumb painted out, and which of them had a hand
    found (the others come back as they are). A SIGNS "5" without its thumb is a "4" as people show it, the
    thumb folded out of sight, which SIGNS' own 4s (thumb across the palm) never show (docs/robustness.md,
    "A 5 without its thumb"). Each photo is enlarged `factor` times for the landmark models; the thumb's
    shape (Hand.silhouette less Hand.without_thumb's) is drawn there, reduced to the photo and filled with
    the wall around the hand: a blur of the photo weighted away from the hand's silhouette."""
    if len(images) == 0:
        return images, torch.zeros(0, dtype=torch.bool)
    size = images.shape[-1]
    big = (size * factor, size * factor)

    def masks(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        hand = find_hand(Image.fromarray(image.permute(1, 2, 0).numpy()).resize(big, Image.Resampling.BICUBIC))
        if hand is None:
            return None
        whole, rest = hand.silhouette(big), hand.without_thumb().silhouette(big)
        thumb = ImageChops.subtract(whole, rest, scale=0.5)  # twice the difference: the thumb's edge too
        thumb = thumb.filter(ImageFilter.MaxFilter(2 * factor + 1)).resize((size, size), Image.Resampling.BOX)
        return (np.asarray(thumb, np.float32) / 255,
                np.asarray(whole.resize((size, size), Image.Resampling.BOX), np.float32) / 255)

    done = [masks(image) for image in images.cpu()]  # one thread: a few seconds, at every training's start
    found = torch.tensor([m is not None for m in done], dtype=torch.bool)
    empty = np.zeros((size, size), np.float32)
    thumb = torch.from_numpy(np.stack([m[0] if m else empty for m in done]))[:, None]
    hand = torch.maximum(torch.from_numpy(np.stack([m[1] if m else empty for m in done]))[:, None], thumb)
    photos = images.cpu().float()
    away = (1 - hand) ** 4  # the wall's weight: nothing on the hand, nothing near its blurred edge
    sigma = torch.full((len(photos),), WALL_BLUR * size)
    wall = gaussian_blur(photos * away, sigma) / gaussian_blur(away, sigma).clamp(min=1e-4)
    painted = photos * (1 - thumb) + wall * thumb
    return painted.round().clamp(0, 255).to(torch.uint8), found


def load_rgb(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`frame`'s pixels alone: uint8 size x size x 3."""
    return frame(source, size, max_pixels)[0]


def scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N x 3 x H x W or N x H x W x 3 numpy-style) to float32 N x 3 x H x W in [0, 1]."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return images.float().div_(255)


def prepare(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
            max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, Framing]:
    """One image to the model's input, float32 3 x size x size in [0, 1], and where the network looked."""
    pixels, framing = frame(source, size, max_pixels)
    return scale(torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0))[0], framing


def prepare_image(source: str | Path | bytes | BinaryIO | Image.Image, size: int = IMAGE_SIZE,
                  max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """One image, any format or mode, to the model's input: float32 3 x size x size in [0, 1]."""
    return prepare(source, size, max_pixels)[0]


# --- loading ----------------------------------------------------------------------------------


def load_hdf5(path: str | Path) -> Dataset:
    """One split of the original HDF5 format: `*_set_x` (N,H,W,3) uint8, `*_set_y` (N,), `list_classes`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            keys = sorted(f.keys())
            x_keys = [k for k in keys if k.endswith("_set_x")]
            y_keys = [k for k in keys if k.endswith("_set_y")]
            if len(x_keys) != 1 or len(y_keys) != 1 or "list_classes" not in keys:
                raise ValueError(f"{path}: needs one '*_set_x', one '*_set_y' and 'list_classes'; found: {keys}")
            x, y, class_values = f[x_keys[0]][()], f[y_keys[0]][()], f["list_classes"][()]
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error})") from None
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{path}: '{x_keys[0]}' has shape {x.shape}, expected (N, H, W, 3)")
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"{path}: holds no images")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(class_values).reshape(-1)]
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
        raise ValueError(f"{path}: labels must be integers in 0..{len(classes) - 1} (list_classes has {len(classes)})")
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
    return Dataset(images, torch.from_numpy(y.astype(np.int64)), classes, str(path))


def _label_of(file: Path, folder: Path) -> str:
    if file.parent != folder:  # class subfolder: 0/, 1/, ...
        return file.parent.name
    return file.name.split("_", 1)[0] if "_" in file.name else file.name[0]


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder` (by suffix), sorted, following symbolic links to files and folders
    (a folder reached twice, through a link loop or two links, is read once)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found, seen = [], set()
    for root, subfolders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        found += [Path(root, name) for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(path for path in found if path.is_file())


def _labelled_files(folders: list[Path]) -> list[tuple[Path, str]]:
    files = []
    for folder in folders:
        found = image_files(folder)
        if not found:
            raise ValueError(f"{folder}: holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(file, _label_of(file, folder)) for file in found]
    return files


def _sorted_classes(labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c))


def folder_classes(folders: list[Path]) -> list[str]:
    """The class names found in image folders, numerically sorted when they are numbers."""
    return _sorted_classes({label for _, label in _labelled_files(folders)})


def load_image_folder(folders: str | Path | list[str | Path], classes: list[str] | None = None,
                      size: int = IMAGE_SIZE) -> Dataset:
    """Images labelled by class subfolder (`3/x.jpg`) or file-name prefix (`3_IMG_5864.jpg`)."""
    folders = [Path(f) for f in (folders if isinstance(folders, list) else [folders])]
    files = _labelled_files(folders)
    classes = classes or _sorted_classes({label for _, label in files})
    index = {name: i for i, name in enumerate(classes)}
    for file, label in files:
        if label not in index:
            raise ValueError(f"{file}: label '{label}' is not one of the classes {classes}")
    images = np.stack([load_rgb(file, size) for file, _ in files])
    return Dataset(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.tensor([index[label] for _, label in files], dtype=torch.int64),
        classes,
        ", ".join(str(f) for f in folders),
    )


def load_dataset(path: str | Path, classes: list[str] | None = None) -> Dataset:
    """A single split: an HDF5 file or a folder of images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        dataset = load_hdf5(path)
        if classes and dataset.classes != classes:
            raise ValueError(f"{path}: classes {dataset.classes} differ from the model's {classes}")
        return dataset
    return load_image_folder(path, classes)


def _first_existing(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def load_splits(path: str | Path | None = None, hold_out_validation: bool = False,
                classes: list[str] | None = None) -> Splits:
    """Train/validation/test splits from any supported layout.

    A folder may hold the original pair `train_signs.h5`/`test_signs.h5`, or the JPEG layout
    (`train_signs/`, `val_signs/`, `test_signs/`, also under `64x64_SIGNS/`), or both: the official
    test split is `test_signs.h5` when it exists. Training uses train + val unless
    `hold_out_validation`, which keeps `val_signs/` (or a seeded fifth of train_signs.h5) apart.
    A single HDF5 file or a plain folder of images is one split, used for training and testing.
    """
    path = Path(path) if path else default_data_path()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (set --data or SIGNS_DATA)")
    if path.is_file():
        dataset = load_dataset(path, classes)
        return Splits(dataset, None, dataset)
    jpeg_root = path / "64x64_SIGNS" if (path / "64x64_SIGNS").is_dir() else path
    train_h5 = _first_existing(path / "train_signs.h5")
    train_dir, val_dir = jpeg_root / "train_signs", jpeg_root / "val_signs"
    test = _first_existing(path / "test_signs.h5", jpeg_root / "test_signs")
    if not (train_h5 or train_dir.is_dir() or test):
        dataset = load_image_folder(path, classes)
        return Splits(dataset, None, dataset)
    # An HDF5 test file's list_classes is authoritative; otherwise the training photos name the classes.
    test_set = load_dataset(test, classes) if test and test.is_file() else None
    classes = classes or (test_set.classes if test_set else None)
    train = val = None
    if train_h5:
        train = load_dataset(train_h5, classes)
        if hold_out_validation:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
            cut = len(train) // 5
            train, val = train.subset(order[cut:]), train.subset(order[:cut])
    elif train_dir.is_dir():
        folders = [d for d in (train_dir, val_dir) if d.is_dir()]
        classes = classes or folder_classes(folders)
        if hold_out_validation and val_dir.is_dir():
            train, val = load_image_folder(train_dir, classes), load_image_folder(val_dir, classes)
        else:
            train = load_image_folder(folders, classes)
    if test and test_set is None:
        test_set = load_dataset(test, classes)
    return Splits(train, val, test_set)
