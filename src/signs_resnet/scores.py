"""How right class probabilities are against labels: accuracy, per class, confusion, calibration. Training's
evaluation (the network on a data set) and `signs evaluate` on a folder (the product's answers) report these."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.float().mean().item() * abs(confidence[in_bin].mean().item() - correct[in_bin].mean().item())
    return error


def scores(probabilities: torch.Tensor, labels: torch.Tensor, classes: list[str], source: str,
           logits: torch.Tensor | None = None) -> dict[str, Any]:
    """Accuracy, cross-entropy (from `logits` when given, exact; else from the probabilities), ECE, per-class
    accuracy, the confusion matrix (rows: true) and each error, for probabilities N x classes against labels N."""
    predicted = probabilities.argmax(1)
    num_classes = len(classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {
        name: (confusion[i, i] / confusion[i].sum()).item() if confusion[i].sum() else None
        for i, name in enumerate(classes)
    }
    return {
        "accuracy": (predicted == labels).float().mean().item(),
        "loss": (F.cross_entropy(logits, labels) if logits is not None
                 else F.nll_loss(probabilities.clamp(min=1e-12).log(), labels)).item(),
        "ece": expected_calibration_error(probabilities, labels),
        "n": len(labels),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": classes,
        "errors": [
            {"index": i, "label": classes[labels[i]], "predicted": classes[predicted[i]]}
            for i in torch.nonzero(predicted != labels).flatten().tolist()
        ],
        "source": source,
    }
