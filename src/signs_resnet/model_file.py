"""The trained model as a file: save_model, load_model, and the LoadedModel they return."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from signs_resnet import artifact
from signs_resnet.model import ResNet50, ResNet50Model

KIND = "model"
DEFAULT_MODEL = "runs/default/model.safetensors"  # where `signs train` and `make run` put the model


def default_model_path() -> str:
    """The model file every command uses when none is named: $SIGNS_MODEL, else DEFAULT_MODEL."""
    return os.environ.get("SIGNS_MODEL") or DEFAULT_MODEL


# The threshold of models written before training stored one: their recipe's, fixed on SIGNS data only
# (docs/accuracy.md, "Confidence"). Today's recipe stores its own (training.config.TrainConfig.confidence_threshold).
DEFAULT_CONFIDENCE_THRESHOLD = 0.998
# The weights of the network's and the landmarks' log-probabilities in an answer (answer.posterior) for models
# written before training stored them: the recipe's, fitted on shifted val_signs photos in its hold-out run
# (training.config.TrainConfig.network_weight, landmark_weight; docs/robustness.md, "The combination").
DEFAULT_COMBINATION = (0.105, 2.1)


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
        """An answer is confident only when its top probability is at least this (answer.is_confident)."""
        return float(self.metadata.get("confidence_threshold", DEFAULT_CONFIDENCE_THRESHOLD))

    @property
    def combination(self) -> tuple[float, float]:
        """The weights of the network's and the landmarks' log-probabilities in an answer (answer.posterior)."""
        return (float(self.metadata.get("network_weight", DEFAULT_COMBINATION[0])),
                float(self.metadata.get("landmark_weight", DEFAULT_COMBINATION[1])))


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
