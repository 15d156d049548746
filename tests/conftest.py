from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def signs_dir() -> Path:
    return SHARED / "signs"


@pytest.fixture(scope="session")
def sample_jpg() -> Path:
    return SHARED / "samples" / "sample.jpg"


def write_h5(path: Path, split: str, images: np.ndarray, labels: np.ndarray, classes=range(6)) -> Path:
    with h5py.File(path, "w") as f:
        f[f"{split}_set_x"] = images
        f[f"{split}_set_y"] = labels
        f["list_classes"] = np.array(list(classes), dtype=np.int64)
    return path


@pytest.fixture(scope="session")
def signs_slice(tmp_path_factory, signs_dir) -> Path:
    """A small folder in the original HDF5 layout: 96 real training photos and 48 test photos."""
    from signs_resnet.data import load_image_folder

    folder = tmp_path_factory.mktemp("signs_slice")
    train = load_image_folder(signs_dir / "64x64_SIGNS" / "train_signs")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    train_index, test_index = order[:96], order[96:144]
    for split, index in (("train", train_index), ("test", test_index)):
        write_h5(folder / f"{split}_signs.h5", split,
                 train.images[index].permute(0, 2, 3, 1).numpy(), train.labels[index].numpy())
    return folder


def random_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save_jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path
