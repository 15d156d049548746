"""benchmarks/accuracy.py end to end on a small slice: the table, the targets line and the kept runs."""

import io
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402
from signs_resnet.data import Dataset, load_image_folder  # noqa: E402


def test_accuracy_benchmark_prints_the_table_and_keeps_each_seeds_run(signs_slice, tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/accuracy.py", "--data", str(signs_slice), "--epochs", "1",
                             "--seeds", "0", "1", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2 and all(line.count("|") == 7 for line in rows)
    assert "of 48 test photos are near-duplicates of training photos" in result.stdout
    assert "median test accuracy" in result.stdout
    # One epoch on 96 photos is far from the targets: the line must say so rather than pass them.
    assert "targets: median >= 99.2%: NOT met" in result.stdout
    assert "| upscaled 1080x1440 portrait |" in result.stdout
    for seed in (0, 1):
        assert (tmp_path / f"seed{seed}" / "model.safetensors").exists()
        assert (tmp_path / f"seed{seed}" / "confusion.png").exists()


def _jpeg_copy(image: torch.Tensor, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy()).permute(2, 0, 1)


def test_near_duplicates_finds_a_training_photo_again_but_not_another_photo_of_the_same_sign(signs_dir):
    train = load_image_folder(signs_dir / "64x64_SIGNS" / "train_signs").subset(slice(0, 30))
    other = load_image_folder(signs_dir / "64x64_SIGNS" / "val_signs")
    same_class = int(torch.nonzero(other.labels == train.labels[0])[0])
    test_images = torch.stack([_jpeg_copy(train.images[0], 75), train.images[5], other.images[same_class]])
    test = Dataset(test_images, torch.stack([train.labels[0], train.labels[5], train.labels[0]]), train.classes, "t")
    assert accuracy.near_duplicates(test, train).tolist() == [True, True, False]
