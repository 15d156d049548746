"""The trained model as a file, and prediction: save_model, load_model, predict."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import artifact
from .data import Framing
from .hands import COUNT_LIKELIHOOD
from .model import ResNet50, ResNet50Model

KIND = "model"
DEFAULT_MODEL = "runs/default/model.safetensors"  # where `signs train` and `make run` put the model


def default_model_path() -> str:
    """The model file every command uses when none is named: $SIGNS_MODEL, else DEFAULT_MODEL."""
    return os.environ.get("SIGNS_MODEL") or DEFAULT_MODEL


# The threshold of models written before training stored one: their recipe's, fixed on SIGNS data only
# (docs/accuracy.md, "Confidence"). Today's recipe stores its own (train.TrainConfig.confidence_threshold).
DEFAULT_CONFIDENCE_THRESHOLD = 0.998


@dataclass(frozen=True)
class Answer:
    """One photo's answer (LoadedModel.answer): its class probabilities (weighed by the hand's count), the most
    probable class, and whether the answer is confident."""

    probabilities: list[float]
    label: str
    confident: bool


@dataclass
class LoadedModel:
    network: ResNet50Model
    classes: list[str]
    input_shape: tuple[int, int, int]
    metadata: dict[str, Any]
    checksum: str
    path: str

    @property
    def image_size(self) -> int:
        return self.input_shape[0]

    @property
    def confidence_threshold(self) -> float:
        """An answer is confident only when its top probability is at least this (is_confident)."""
        return float(self.metadata.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD))

    def posterior(self, probabilities: list[float], framing: Framing) -> list[float]:
        """The answer's class probabilities: the network's, weighed by the count of fingers the hand's points
        show (Bayes' rule, the count taken as a second look at the photo: each class's probability times how
        often SIGNS hands of that class show that count, hands.COUNT_LIKELIHOOD, summing to 1 again). The
        network's own where there is no count (photos read as they are, no hand found) and for models whose
        classes are not SIGNS' (docs/accuracy.md, "The hand's count")."""
        if (framing.fingers not in range(6) or len(probabilities) != len(self.classes)
                or not all(name in COUNT_LIKELIHOOD for name in self.classes)):
            return probabilities
        weighed = [p * COUNT_LIKELIHOOD[name][framing.fingers] for p, name in zip(probabilities, self.classes)]
        total = sum(weighed)
        return [w / total for w in weighed] if total > 0 else probabilities

    def is_confident(self, probabilities: list[float], framing: Framing) -> bool:
        """The rule every answer follows (docs/accuracy.md, "Confidence"), on its probabilities (posterior): a
        hand was found where one was looked for, its points show as many fingers as the answer counts
        (data.Framing.shows), and the top class probability reaches the model's threshold."""
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return (framing.hand_found and framing.shows(self.classes[best])
                and probabilities[best] >= self.confidence_threshold)

    def answer(self, probabilities: list[float], framing: Framing) -> Answer:
        """The answer to one photo from the network's probabilities and where its hand was found: weighed by
        the hand's count once (posterior), then judged by the confidence rule (is_confident). Every path
        that answers a photo (the CLI, /predict, KServe v2, gRPC) answers through this."""
        weighed = self.posterior(probabilities, framing)
        best = max(range(len(weighed)), key=weighed.__getitem__)
        return Answer(weighed, self.classes[best], self.is_confident(weighed, framing))


def save_model(path: str | Path, model: ResNet50Model, metadata: dict[str, Any]) -> str:
    """Write the model artifact: weights in safetensors, metadata and checksum in its header."""
    return artifact.save(path, KIND, {"weights": model.state_dict()}, metadata)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Read and verify a model artifact and rebuild the network in inference mode."""
    state, metadata, checksum = artifact.load(path, KIND)
    try:
        classes = [str(c) for c in metadata["classes"]]
        input_shape = tuple(int(v) for v in metadata["input_shape"])
        network = ResNet50(input_shape, len(classes))
        network.load_state_dict(state["weights"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: model file does not describe a SIGNS ResNet50 ({error})") from None
    network = network.to(device, memory_format=torch.channels_last).eval()
    return LoadedModel(network, classes, input_shape, metadata, checksum, str(path))


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
