import dataclasses

import torch
import torch.nn.functional as F

from signs_resnet.training.augment import (
    AugmentConfig,
    augment,
    composite_backgrounds,
    gaussian_blur,
    hand_mask,
    procedural_backgrounds,
    random_affine,
    random_camera,
    random_colour,
)


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


def synthetic_signs_photo(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Light gray photos with a skin-coloured 'hand' (a palm and a finger) at a known place, and its mask."""
    images = torch.empty(n, 3, 64, 64)
    images[:] = torch.tensor([0.85, 0.83, 0.79]).view(1, 3, 1, 1)
    hand = torch.zeros(n, 1, 64, 64, dtype=torch.bool)
    hand[:, :, 30:64, 20:44] = True  # palm and arm
    hand[:, :, 8:30, 28:33] = True  # a finger
    images = torch.where(hand, torch.tensor([0.72, 0.5, 0.38]).view(1, 3, 1, 1), images)
    return images, hand


def test_hand_mask_finds_the_hand_of_a_plain_background_photo():
    images, hand = synthetic_signs_photo()
    mask = hand_mask(images)
    assert mask.shape == (4, 1, 64, 64) and mask.min() >= 0 and mask.max() <= 1
    inside = hand & (F.avg_pool2d(hand.float(), 5, 1, 2) == 1)  # away from the soft edge
    outside = ~hand & (F.max_pool2d(hand.float(), 5, 1, 2) == 0)
    assert mask[inside].min() > 0.95 and mask[outside].max() < 0.05


def test_hand_mask_leaves_out_the_hands_gray_shadow():
    """A shadow on the wall is darker than the border but gray: pasted elsewhere it would be an extra finger.
    (This wall's saturation, 0.07, is a typical SIGNS wall's; without the colour test the shadow is all hand.)"""
    images, hand = synthetic_signs_photo()
    shadow = torch.zeros_like(hand)
    shadow[:, :, 8:30, 36:41] = True  # a finger's shadow beside the finger
    images = torch.where(shadow, images * 0.7, images)
    mask = hand_mask(images)
    assert mask[shadow & (F.avg_pool2d(shadow.float(), 3, 1, 1) == 1)].max() < 0.2
    inside = hand & (F.avg_pool2d(hand.float(), 5, 1, 2) == 1)
    assert mask[inside].min() > 0.95


def test_compositing_keeps_the_hand_replaces_the_background_and_is_deterministic():
    images, hand = synthetic_signs_photo(16)
    config = AugmentConfig(background_probability=1.0)
    out = composite_backgrounds(images, config, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    inside = (hand & (F.avg_pool2d(hand.float(), 5, 1, 2) == 1)).expand_as(images)
    assert (out - images).abs()[inside].max() < 0.05
    outside = (~hand & (F.max_pool2d(hand.float(), 5, 1, 2) == 0)).expand_as(images)
    assert (out - images).abs()[outside].mean() > 0.1
    assert torch.equal(out, composite_backgrounds(images, config, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, composite_backgrounds(images, config, torch.Generator().manual_seed(1)))


def test_compositing_a_share_of_the_batch_and_none_when_off():
    images, _ = synthetic_signs_photo(64)
    out = composite_backgrounds(images, AugmentConfig(background_probability=0.5), torch.Generator().manual_seed(0))
    changed = (out - images).flatten(1).abs().amax(1) > 0.05
    assert 16 < int(changed.sum()) < 48
    # Off (the default), augment draws exactly the random numbers it drew before compositing existed.
    generator = torch.Generator().manual_seed(5)
    augment(images, generator)
    reference = torch.Generator().manual_seed(5)
    augment(images, reference, AugmentConfig(background_probability=0.0))
    assert torch.equal(generator.get_state(), reference.get_state())


def test_procedural_backgrounds_are_in_range_and_varied():
    backgrounds = procedural_backgrounds(64, 32, 48, torch.Generator().manual_seed(0))
    assert backgrounds.shape == (64, 3, 32, 48) and backgrounds.min() >= 0 and backgrounds.max() <= 1
    assert backgrounds.mean((1, 2, 3)).std() > 0.1  # not all alike


def _sharpness(images: torch.Tensor) -> torch.Tensor:
    """Per image, the mean absolute difference between horizontal neighbours."""
    return (images[..., 1:] - images[..., :-1]).abs().mean((1, 2, 3))


def test_camera_softens_a_share_of_the_batch_in_range_and_deterministically():
    stripes = (torch.arange(64) // 2 % 2).float().expand(64, 3, 64, 64).clone() * 0.8 + 0.1
    config = AugmentConfig(camera_probability=0.5)
    copy = stripes.clone()
    out = random_camera(stripes, config, torch.Generator().manual_seed(0))
    assert torch.equal(out, random_camera(stripes, config, torch.Generator().manual_seed(0)))
    assert out.min() >= 0 and out.max() <= 1 and torch.equal(stripes, copy)
    changed = (out - stripes).abs().amax((1, 2, 3)) > 0
    chosen = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5  # the function's first draw
    assert torch.equal(changed, chosen) and 16 <= chosen.sum() <= 48  # exactly the chosen half, the rest as it was
    assert (_sharpness(out[changed]) < 0.8 * _sharpness(stripes[changed])).float().mean() > 0.9


def test_camera_draws_depend_on_the_batch_shape_only():
    states = []
    for images, probability in ((torch.rand(8, 3, 64, 64), 0.01), (torch.zeros(8, 3, 64, 64), 1.0)):
        generator = torch.Generator().manual_seed(0)
        random_camera(images, AugmentConfig(camera_probability=probability), generator)
        states.append(generator.get_state())
    assert torch.equal(*states)


def test_camera_off_leaves_recipes_as_they_were():
    images = torch.rand(8, 3, 64, 64)
    assert torch.equal(random_camera(images, AugmentConfig(camera_probability=0.0), torch.Generator()), images)
    # Off, augment() draws no camera numbers, so a seed gives what it gave before the field existed.
    off, before = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    augment(images, off, AugmentConfig(camera_probability=0.0))
    random_colour(random_affine(images, AugmentConfig(), before), AugmentConfig(), before)
    assert torch.equal(off.get_state(), before.get_state())
    on = torch.Generator().manual_seed(0)
    augment(images, on, AugmentConfig(camera_probability=0.5))
    assert not torch.equal(on.get_state(), before.get_state())


def test_gaussian_blur_keeps_a_flat_image_and_spreads_a_dot():
    flat = torch.full((2, 3, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 1.2])), flat)
    dot = torch.zeros(2, 3, 9, 9)
    dot[:, :, 4, 4] = 1
    blurred = gaussian_blur(dot, torch.tensor([0.0, 1.2]))
    assert blurred[0, :, 4, 4].allclose(torch.ones(3), atol=1e-4)  # sigma 0: unchanged
    assert blurred[1, :, 4, 4].max() < 0.2 and torch.allclose(blurred[1].sum((1, 2)), torch.ones(3), atol=1e-4)
