"""Which confidence score, with its threshold fixed on SIGNS data alone, marks answers on real photos confidently?

    python benchmarks/confidence_scores.py MODEL

For each score (top probability, top-two margin, energy = logsumexp of the logits, and the top probability
of the average over the photo and its mirror image), the threshold is the one robustness.py's rule picks:
the lowest score whose answers on the shifted val_signs photos (procedural backgrounds, augmented) are
>= 95% right. It prints the share of real photos that rule marks confident and how many of those are
right. The last column is measured on hands_crops only to show what any threshold of that score could
reach (the largest share with >= 95% right); it is never used to choose anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness  # noqa: E402

from signs_resnet import load_model  # noqa: E402
from signs_resnet.data import datasets


@torch.inference_mode()
def _logits(network, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([network(batch.contiguous(memory_format=torch.channels_last)).float()
                      for batch in images.split(256)])


def scores(model, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Score name -> (the probabilities that answer, the score of each answer)."""
    temperature = float(model.metadata.get("temperature", 1.0))
    logits = _logits(model.network, images)
    probabilities = (logits / temperature).softmax(1)
    mirrored = (_logits(model.network, images.flip(-1)) / temperature).softmax(1)
    averaged = (probabilities + mirrored) / 2
    top_two = probabilities.topk(2, 1).values
    return {
        "top probability": (probabilities, top_two[:, 0]),
        "margin (top two)": (probabilities, top_two[:, 0] - top_two[:, 1]),
        "energy (logsumexp)": (probabilities, logits.logsumexp(1)),
        "top probability, photo + mirror": (averaged, averaged.max(1).values),
    }


def threshold(probabilities: torch.Tensor, score: torch.Tensor, labels: torch.Tensor, accuracy: float) -> float:
    """The lowest score whose answers at or above it are `accuracy` right (inf when none)."""
    order = torch.argsort(score, descending=True)
    correct = (probabilities.argmax(1) == labels)[order].float()
    good = torch.nonzero(correct.cumsum(0) / torch.arange(1, len(correct) + 1) >= accuracy).flatten()
    return float(score[order][good[-1]]) if len(good) else float("inf")


def main() -> None:
    model = load_model(sys.argv[1])
    real = datasets.default_data_path().parent / "real"
    _, val = robustness.signs_sets(model, None)
    reference = robustness.shifted_reference(val)
    sets = {name: robustness.real_set(real / name, model.classes, model.image_size) for name in robustness.REAL_SETS}
    on_reference = scores(model, reference.images)
    on_real = {name: scores(model, photos.images) for name, photos in sets.items()}
    print(f"{sys.argv[1]}\n")
    print("| score | threshold (shifted val_signs) | hands_crops: covers | right | hands_frames: covers | right |"
          " hands_crops, any threshold: most covered at >= 95% right |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (probabilities, score) in on_reference.items():
        cut = threshold(probabilities, score, reference.labels, robustness.CONFIDENT_ACCURACY)
        cells = []
        for set_name, photos in sets.items():
            answers, real_score = on_real[set_name][name]
            confident, right = real_score >= cut, answers.argmax(1) == photos.labels
            cells += [f"{confident.float().mean():.1%}", f"{right[confident].float().mean():.1%}" if confident.any() else "-"]
        answers, real_score = on_real["hands_crops"][name]
        best = threshold(answers, real_score, sets["hands_crops"].labels, robustness.CONFIDENT_ACCURACY)
        covered = (real_score >= best).float().mean().item()
        print(f"| {name} | {cut:.3f} | " + " | ".join(cells) + f" | {covered:.1%} |")


if __name__ == "__main__":
    main()
