import io

import h5py
import numpy as np
import pytest
import torch
from conftest import random_images, save_jpeg, write_h5
from PIL import Image

from signs_resnet import prepare_image
from signs_resnet.data import datasets, preprocess

# --- the three layouts ---------------------------------------------------------------------------

def test_original_hdf5_pair(tmp_path):
    write_h5(tmp_path / "train_signs.h5", "train", random_images(10), np.arange(10) % 6)
    write_h5(tmp_path / "test_signs.h5", "test", random_images(4, seed=1), np.array([5, 4, 3, 2]))
    splits = datasets.load_splits(tmp_path)
    assert splits.train.images.shape == (10, 3, 64, 64) and splits.train.images.dtype == torch.uint8
    assert splits.train.labels.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert splits.test.labels.tolist() == [5, 4, 3, 2]
    assert splits.train.classes == ["0", "1", "2", "3", "4", "5"]
    assert splits.val is None
    held_out = datasets.load_splits(tmp_path, hold_out_validation=True)
    assert len(held_out.train) == 8 and len(held_out.val) == 2


def test_single_hdf5_file_keeps_pixels_in_hwc_order(tmp_path):
    images = random_images(3)
    path = write_h5(tmp_path / "mine.h5", "mine", images, np.array([1, 2, 3]))
    dataset = datasets.load_dataset(path)
    assert torch.equal(dataset.images.permute(0, 2, 3, 1), torch.from_numpy(images))
    splits = datasets.load_splits(path)
    assert splits.train is splits.test


def test_image_folder_with_class_subfolders(tmp_path):
    for i, label in enumerate(["0", "1", "1", "5"]):
        save_jpeg(tmp_path / label / f"photo{i}.jpg", random_images(1, seed=i)[0])
    dataset = datasets.load_dataset(tmp_path)
    assert dataset.classes == ["0", "1", "5"]
    assert dataset.labels.tolist() == [0, 1, 1, 2]


def test_image_folder_with_file_name_prefix_and_jpeg_layout(tmp_path):
    root = tmp_path / "64x64_SIGNS"
    save_jpeg(root / "train_signs" / "3_IMG_1.jpg", random_images(1)[0])
    save_jpeg(root / "val_signs" / "5_IMG_2.jpg", random_images(1, seed=2)[0])
    save_jpeg(root / "test_signs" / "3_IMG_3.jpg", random_images(1, seed=3)[0])
    splits = datasets.load_splits(tmp_path)
    assert len(splits.train) == 2 and len(splits.test) == 1
    assert [splits.train.classes[i] for i in splits.train.labels] == ["3", "5"]
    held_out = datasets.load_splits(tmp_path, hold_out_validation=True)
    assert len(held_out.train) == 1 and len(held_out.val) == 1


def test_official_test_split_is_the_hdf5_file(signs_dir):
    splits = datasets.load_splits(signs_dir)
    assert splits.test.source.endswith("test_signs.h5") and len(splits.test) == 120
    assert len(splits.train) == 1080


# --- bad input ---------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        datasets.load_splits(tmp_path / "nope")


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="holds no image files"):
        datasets.load_splits(tmp_path)


def test_corrupt_and_truncated_hdf5(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(ValueError, match="junk.h5: not a readable HDF5 file"):
        datasets.load_dataset(tmp_path / "junk.h5")
    good = write_h5(tmp_path / "good.h5", "train", random_images(20), np.zeros(20, dtype=np.int64))
    (tmp_path / "cut.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.h5"):
        datasets.load_dataset(tmp_path / "cut.h5")


def test_hdf5_with_missing_keys(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = random_images(2)
        f["y"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"x.h5: needs one '\*_set_x'.*found: \['x', 'y'\]"):
        datasets.load_dataset(tmp_path / "x.h5")


def test_hdf5_with_mismatched_lengths(tmp_path):
    write_h5(tmp_path / "x.h5", "train", random_images(3), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        datasets.load_dataset(tmp_path / "x.h5")


def test_hdf5_labels_outside_the_class_list(tmp_path):
    write_h5(tmp_path / "x.h5", "train", random_images(2), np.array([0, 6]))
    with pytest.raises(ValueError, match="labels must be integers in 0..5"):
        datasets.load_dataset(tmp_path / "x.h5")


def test_hdf5_with_wrong_image_shape(tmp_path):
    write_h5(tmp_path / "x.h5", "train", np.zeros((2, 64, 64), dtype=np.uint8), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(2, 64, 64\)"):
        datasets.load_dataset(tmp_path / "x.h5")


def test_unreadable_image_in_a_folder(tmp_path):
    save_jpeg(tmp_path / "1_ok.jpg", random_images(1)[0])
    (tmp_path / "2_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match="2_broken.jpg"):
        datasets.load_dataset(tmp_path)


def test_folder_labels_outside_the_class_list(tmp_path):
    save_jpeg(tmp_path / "7_IMG.jpg", random_images(1)[0])
    with pytest.raises(ValueError, match="7_IMG.jpg: label '7' is not one of the classes"):
        datasets.load_dataset(tmp_path, classes=[str(i) for i in range(6)])


# --- preprocessing -----------------------------------------------------------------------------

def test_prepare_image_matches_the_training_path(signs_dir):
    """The same photo gives the same tensor through prepare_image and through the dataset loader."""
    folder = signs_dir / "64x64_SIGNS" / "test_signs"
    dataset = datasets.load_image_folder(folder)
    files = sorted(folder.glob("*.jpg"))
    for i in (0, 57, 119):
        assert torch.equal(prepare_image(files[i]), preprocess.scale(dataset.images[i : i + 1])[0])
        assert torch.equal(prepare_image(files[i].read_bytes()), prepare_image(Image.open(files[i])))


def test_prepare_image_of_an_hdf5_array_is_its_scaled_pixels(signs_dir):
    test = datasets.load_hdf5(signs_dir / "test_signs.h5")
    pixels = test.images[0].permute(1, 2, 0).numpy()
    assert torch.equal(prepare_image(Image.fromarray(pixels)), test.images[0].float() / 255)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
def test_prepare_image_accepts_every_mode(mode):
    rgb = Image.fromarray(random_images(1, size=80)[0])
    if mode in ("I;16", "I"):
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        image = image if mode == "I;16" else image.convert("I")
    elif mode == "F":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.float32) / 255, "F")
    else:
        image = rgb.convert(mode)
    x = prepare_image(image)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    if mode in ("I;16", "I", "F"):  # 16-bit and float images are rescaled, not clipped to white
        assert abs(x.mean().item() - prepare_image(rgb.convert("L")).mean().item()) < 0.01


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert torch.equal(prepare_image(image), torch.ones(3, 64, 64))


def test_exif_orientation_is_applied():
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = 255  # left half white
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=95)
    x = prepare_image(buffer.getvalue())
    top, bottom = x[:, 20:30, 16:48].mean(), x[:, 34:44, 16:48].mean()
    assert top > 0.9 and bottom < 0.1  # the white half is on top after rotation


def test_non_square_images_are_padded_not_cropped():
    pixels = np.full((200, 100, 3), 240, dtype=np.uint8)
    pixels[:10] = 0  # a dark band at the very top must survive
    x = prepare_image(Image.fromarray(pixels))
    assert x.shape == (3, 64, 64)
    assert x[:, 0:2, 24:40].mean() < 0.2
    assert x[:, :, :10].mean() > 0.9  # padding takes the border colour (light), not black


def test_decompression_bomb_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, "PNG")
    with pytest.raises(ValueError, match="over the limit"):
        prepare_image(buffer.getvalue(), max_pixels=10_000_000)


@pytest.mark.parametrize("payload", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50])
def test_non_images_are_refused(payload):
    with pytest.raises(ValueError, match="image"):
        prepare_image(payload)


def test_truncated_jpeg_is_refused(sample_jpg):
    with pytest.raises(ValueError, match="image"):
        prepare_image(sample_jpg.read_bytes()[:5000])
