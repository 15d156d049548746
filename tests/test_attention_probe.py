"""benchmarks/attention.py's parts: Grad-CAM maps are photo-sized, in [0, 1], each scaled to its own maximum (or all 0),
and depend on the class asked about; the rows pick photos evenly through a group."""

import sys

import torch
from conftest import ROOT

from signs_resnet.model import ResNet50

sys.path.insert(0, str(ROOT / "benchmarks"))
import attention  # noqa: E402


def test_grad_cam_maps_are_photo_sized_scaled_and_class_specific():
    torch.manual_seed(0)
    network = ResNet50().eval()
    images = torch.rand(3, 3, 64, 64)
    for stage in (3, 4):
        maps = attention.grad_cam(network, images, torch.tensor([0, 1, 2]), stage)
        assert maps.shape == (3, 64, 64) and maps.min() >= 0
        peaks = maps.flatten(1).amax(1)  # 1, or 0 where nothing in the photo raised that class
        assert all(abs(p - 1) < 1e-5 or p == 0 for p in peaks.tolist()) and peaks.max() == 1
    other = attention.grad_cam(network, images, torch.tensor([5, 4, 3]), 3)
    assert not torch.allclose(other, attention.grad_cam(network, images, torch.tensor([0, 1, 2]), 3))
    # The map is of the stage asked for: the same as one built by hand from that stage's output.
    x = images
    for layer in (network.stage1, network.stage2, network.stage3):
        x = layer(x)
    features = x.detach().requires_grad_(True)
    logits = network.fc(network.flatten(network.pool(network.stage5(network.stage4(features)))))
    gradients, = torch.autograd.grad(logits[:, 0].sum(), features)
    by_hand = torch.relu((gradients.mean((2, 3), keepdim=True) * features).sum(1)).detach()
    by_hand = torch.nn.functional.interpolate(by_hand[:, None], size=(64, 64), mode="bilinear")[:, 0]
    by_hand = by_hand / by_hand.flatten(1).amax(1).clamp(min=1e-8)[:, None, None]
    assert torch.allclose(attention.grad_cam(network, images, torch.tensor([0, 0, 0]), 3), by_hand, atol=1e-4)


def test_pick_spreads_evenly_and_keeps_short_groups():
    assert attention.pick(list(range(10)), 3) == [0, 4, 9]  # 4.5 rounds to 4 (banker's rounding)
    assert attention.pick([7, 8], 5) == [7, 8]
    assert attention.pick([1, 2, 3, 4], 1) == [3]
