"""The network's forward pass as prediction runs it: optimize_for_inference and predict."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from signs_resnet.model_file import LoadedModel


def optimize_for_inference(model: LoadedModel, precision: str = "fp32") -> LoadedModel:
    """A copy for serving: every batch norm folded into the convolution before it (the same function in
    fewer ops) and, for precision "bf16", the weights stored in bfloat16 (no casts on every call)."""
    network = copy.deepcopy(model.network).eval()
    for module in network.modules():
        if isinstance(module, torch.nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], torch.nn.Conv2d) and isinstance(module[i + 1], torch.nn.BatchNorm2d):
                    module[i] = torch.nn.utils.fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = torch.nn.Identity()
    if precision == "bf16":
        network = network.to(torch.bfloat16)
    network.requires_grad_(False)
    return replace(model, network=network.to(memory_format=torch.channels_last))


@torch.inference_mode()
def predict(model: LoadedModel, images: torch.Tensor, batch_size: int = 256, precision: str = "fp32") -> torch.Tensor:
    """Class probabilities (N x classes, float32) for float images N x 3 x H x W scaled to [0, 1].

    precision "bf16" runs the network in bfloat16 (autocast; best with optimize_for_inference(model,
    "bf16")): faster on CPUs with AMX, at a small probability difference from fp32 (docs/performance.md,
    "Inference engines").
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    expected = (3, model.input_shape[0], model.input_shape[1])
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"expected images of shape N x {expected[0]} x {expected[1]} x {expected[2]}, "
                         f"got {tuple(images.shape)}")
    device = next(model.network.parameters()).device
    temperature = float(model.metadata.get("temperature", 1.0))
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model.network(batch)
        outputs.append(torch.softmax(logits.float() / temperature, dim=1).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0, len(model.classes))
