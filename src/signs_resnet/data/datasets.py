"""SIGNS and other labelled photos: the original HDF5 files or folders of images, as train/validation/test
splits of uint8 tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from signs_resnet.data.preprocess import IMAGE_SIZE, load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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
    project_root = Path(__file__).resolve().parents[3]
    return project_root.parent / "shared" / "data" / "signs"


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


def labelled_files(folders: list[Path]) -> list[tuple[Path, str]]:
    """Every image file under `folders` with its label (class subfolder, or file-name prefix)."""
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
    return _sorted_classes({label for _, label in labelled_files(folders)})


def load_image_folder(folders: str | Path | list[str | Path], classes: list[str] | None = None,
                      size: int = IMAGE_SIZE) -> Dataset:
    """Images labelled by class subfolder (`3/x.jpg`) or file-name prefix (`3_IMG_5864.jpg`)."""
    folders = [Path(f) for f in (folders if isinstance(folders, list) else [folders])]
    files = labelled_files(folders)
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


def _layout(path: Path) -> tuple[Path | None, Path, Path, Path | None]:
    """A folder's SIGNS layout: train_signs.h5 (or None), the train_signs/ and val_signs/ folders (which may
    not exist), and the test split (test_signs.h5, else test_signs/, else None); the JPEG folders also under
    64x64_SIGNS/."""
    jpeg_root = path / "64x64_SIGNS" if (path / "64x64_SIGNS").is_dir() else path
    return (_first_existing(path / "train_signs.h5"), jpeg_root / "train_signs", jpeg_root / "val_signs",
            _first_existing(path / "test_signs.h5", jpeg_root / "test_signs"))


def test_folder(path: str | Path | None = None) -> Path | None:
    """The folder of photo files that load_splits(path) reads its test split from; None when that split is an
    HDF5 file (or there is none)."""
    path = Path(path) if path else default_data_path()
    if not path.is_dir():
        return None
    train_h5, train_dir, _, test = _layout(path)
    if not (train_h5 or train_dir.is_dir() or test):
        return path  # a plain folder of photos: one split, for testing too
    return test if test is not None and test.is_dir() else None


def training_images(path: str | Path | None = None) -> tuple[torch.Tensor, Path]:
    """The training photos of a SIGNS folder (train_signs.h5 or train_signs/, with val_signs/: load_splits'
    train), N x 3 x H x W uint8, and the folder; ValueError when it has none (a plain folder of photos, such as
    real/, is not one)."""
    path = Path(path) if path else default_data_path()
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder")
    train_h5, train_dir, _, _ = _layout(path)
    if not (train_h5 or train_dir.is_dir()):
        raise ValueError(f"{path}: no train_signs.h5 or train_signs/ in it")
    return load_splits(path).train.images, path


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
    train_h5, train_dir, val_dir, test = _layout(path)
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
