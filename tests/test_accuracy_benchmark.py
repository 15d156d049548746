"""benchmarks/accuracy.py end to end on a small slice (the table, the targets line and the kept runs), and its
near-duplicate rule on its own."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from PIL import Image

sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402

from signs_resnet.data.datasets import Dataset, load_hdf5  # noqa: E402
from signs_resnet.data.preprocess import load_rgb  # noqa: E402

pytestmark = pytest.mark.slow  # trains models end to end


def test_accuracy_benchmark_prints_the_table_and_keeps_each_seeds_run(tiny_slice, tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/accuracy.py", "--data", str(tiny_slice), "--epochs", "1",
                             "--seeds", "0", "1", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2 and all(line.count("|") == 7 for line in rows)
    assert "of 16 test photos are near-duplicates of training photos" in result.stdout
    assert "median test accuracy" in result.stdout
    # One epoch on 32 photos is far from the targets: the line must say so rather than pass them.
    assert "targets: median >= 99.2%: NOT met" in result.stdout
    assert "| upscaled 1080x1440 portrait |" in result.stdout
    for seed in (0, 1):
        assert (tmp_path / f"seed{seed}" / "model.safetensors").exists()
        assert (tmp_path / f"seed{seed}" / "confusion.png").exists()


def _dataset(images: torch.Tensor) -> Dataset:
    return Dataset(images, torch.zeros(len(images), dtype=torch.long), ["0"], "made up")


def test_near_duplicates_finds_a_photo_in_its_jpeg_copy_and_holds_the_threshold(signs_dir):
    photo = load_hdf5(signs_dir / "test_signs.h5").images[:1]  # uncompressed, as the test split is
    as_jpeg = torch.from_numpy(load_rgb(accuracy._jpeg(Image.fromarray(photo[0].permute(1, 2, 0).numpy()), 75)))
    as_jpeg = as_jpeg.permute(2, 0, 1)[None]
    # A made-up training photo and copies of it at a mean squared difference of exactly 81 and 121.
    train = torch.randint(20, 236, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    signs = (torch.arange(train[0].numel()).view(train[0].shape) % 2 * 2 - 1).to(torch.int16)
    near, far = ((train.to(torch.int16) + step * signs).to(torch.uint8) for step in (9, 11))
    test = _dataset(torch.cat([as_jpeg, near, far]))
    assert accuracy.near_duplicates(test, _dataset(torch.cat([photo, train]))).tolist() == [True, True, False]
    assert accuracy.near_duplicates(_dataset(photo[:, :, :32]), _dataset(photo)).tolist() == [False]


def test_accuracy_without_leaves_out_the_near_duplicates_and_their_errors():
    duplicated = torch.tensor([True, False, False, False, True])
    assert accuracy.accuracy_without([{"index": 0}, {"index": 2}], duplicated) == 2 / 3
    assert accuracy.accuracy_without([], duplicated) == 1.0
    assert accuracy.accuracy_without([{"index": 0}], torch.ones(2, dtype=torch.bool)) is None
