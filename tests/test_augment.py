import dataclasses

import torch

from signs_resnet.augment import AugmentConfig, augment


def test_augment_keeps_shape_and_range_and_changes_the_images():
    images = torch.rand(16, 3, 64, 64)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert (out - images).abs().mean() > 0.01


def test_augment_is_deterministic_under_a_seed():
    images = torch.rand(8, 3, 64, 64)
    first = augment(images, torch.Generator().manual_seed(3))
    second = augment(images, torch.Generator().manual_seed(3))
    third = augment(images, torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


def test_augment_does_not_modify_its_input():
    images = torch.rand(4, 3, 64, 64)
    copy = images.clone()
    augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(images, copy)


NOTHING = AugmentConfig(rotation_degrees=0, zoom=(1, 1), shift=0, flip=False, brightness=0, contrast=0,
                        saturation=0, hue_degrees=0, grayscale_probability=0)


def test_augment_with_every_magnitude_zero_is_the_identity():
    images = torch.rand(8, 3, 64, 64)
    assert torch.allclose(augment(images, torch.Generator().manual_seed(0), NOTHING), images, atol=1e-5)


def test_mirroring_flips_about_half_of_the_images_exactly():
    images = torch.rand(64, 3, 64, 48)  # non-square too
    out = augment(images, torch.Generator().manual_seed(0), dataclasses.replace(NOTHING, flip=True))
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, images)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 16 < sum(mirrored) < 48


def test_grayscale_images_have_equal_channels():
    images = torch.rand(8, 3, 64, 64)
    out = augment(images, torch.Generator().manual_seed(0), dataclasses.replace(NOTHING, grayscale_probability=1))
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)
