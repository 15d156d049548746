import torch

from signs_resnet.augment import augment


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
