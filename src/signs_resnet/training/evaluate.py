"""evaluate(network, dataset) -> accuracy, per-class accuracy, confusion matrix, calibration; and plots."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from signs_resnet import artifact
from signs_resnet.data.datasets import Dataset
from signs_resnet.data.preprocess import scale
from signs_resnet.extras import require
from signs_resnet.scores import scores


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The softmax temperature T minimising the cross-entropy of logits / T (Guo et al., 2017)."""
    logits = logits.detach().clone().float()  # a plain tensor, even from inference mode
    log_temperature = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=100)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(logits / log_temperature.exp(), labels)
        value.backward()
        return value

    optimizer.step(loss)
    return log_temperature.exp().item()


@torch.inference_mode()
def logits_of(network: torch.nn.Module, dataset: Dataset, device: torch.device | str = "cpu",
              batch_size: int = 256) -> torch.Tensor:
    network.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        batch = scale(dataset.images[start:start + batch_size].to(device))
        outputs.append(network(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(outputs)


def evaluate(network: torch.nn.Module, dataset: Dataset, temperature: float = 1.0,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Inference-mode metrics of `network` on `dataset` (scores.scores)."""
    logits = logits_of(network, dataset, device) / temperature
    return scores(torch.softmax(logits, 1), dataset.labels, dataset.classes, dataset.source, logits)


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    artifact.atomic_write(path, buffer.getvalue())


def plot_confusion(result: dict[str, Any], path: str | Path) -> None:
    matplotlib = require("matplotlib", "drawing the confusion matrix")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion, classes = result["confusion"], result["classes"]
    figure, axes = plt.subplots(figsize=(4.2, 3.8))
    axes.imshow(confusion, cmap="Blues")
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            axes.text(j, i, count, ha="center", va="center", color="white" if count > max(map(max, confusion)) / 2 else "black")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"accuracy {result['accuracy']:.1%} on {result['n']} images")
    _save_figure(figure, Path(path))


def plot_curves(history: list[dict[str, float]], path: str | Path) -> None:
    matplotlib = require("matplotlib", "drawing the training curves")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split in ("train", "val"):
        if f"{split}_loss" in history[0]:
            loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", label=split)
            accuracy_axes.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", label=split)
    loss_axes.set_title("loss")
    accuracy_axes.set_title("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend()
    _save_figure(figure, Path(path))
