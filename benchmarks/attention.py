"""Where the model looks: Grad-CAM maps of SIGNS test photos and real photos, right and wrong, as one grid.

    PYTHONPATH=src python benchmarks/attention.py --model runs/default/model.safetensors --out grid.jpg
        [--stage 3] [--per-row 8] [--data PATH] [--real DIR]

Grad-CAM (Selvaraju et al., 2017): the answer's logit is differentiated with respect to a stage's output
(stage 3: 8x8 cells of 512 channels for a 64x64 photo; stage 4: 4x4 of 1024); each channel is weighted by its mean
gradient, the weighted sum kept where positive, scaled to the photo. Bright = what raised the answer.
Rows: SIGNS test "4"s and "5"s, then real crops (`real/hands_crops`): "4"s read as "5", "4"s read right,
"1"s read wrong, "1"s read right; photos picked evenly through each group's sorted file names. Each map
is also summarised as the share of its weight on the hand (the SIGNS mask of augment.hand_mask, for SIGNS
photos only) to say whether the model reads the hand or the background. Findings: docs/robustness.md,
"Levers measured".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from signs_resnet import load_model  # noqa: E402
from signs_resnet.data import datasets, preprocess
from signs_resnet.inference.forward import predict
from signs_resnet.training.augment import hand_mask  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from robustness import real_set  # noqa: E402


def grad_cam(network: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor, stage: int = 3) -> torch.Tensor:
    """Grad-CAM maps N x H x W in [0, 1] (each scaled to its own maximum, or all 0) for the given class of
    each image, from the network's own forward pass with the stage's output kept."""
    kept = {}

    def keep(_module, _inputs, output):  # the rest of the pass starts from this leaf, whatever the weights need
        kept["features"] = output.detach().requires_grad_(True)
        return kept["features"]

    hook = getattr(network, f"stage{stage}").register_forward_hook(keep)
    try:
        logits = network(images.contiguous(memory_format=torch.channels_last))
    finally:
        hook.remove()
    features = kept["features"]
    gradients, = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), features)
    weights = gradients.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.flatten(1).amax(1).clamp(min=1e-8)[:, None, None]


def pick(indices: list[int], count: int) -> list[int]:
    """`count` of the indices, evenly spread (all of them when there are fewer)."""
    if len(indices) <= count:
        return indices
    if count == 1:
        return [indices[len(indices) // 2]]
    return [indices[round(i * (len(indices) - 1) / (count - 1))] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the grid (.jpg or .png)")
    parser.add_argument("--stage", type=int, default=3, choices=[2, 3, 4], help="the stage whose output is mapped")
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--data", help="SIGNS data (default: $SIGNS_DATA or ../shared/data/signs)")
    parser.add_argument("--real", type=Path, help="real photos (default: real/ beside the SIGNS data)")
    args = parser.parse_args()
    if args.per_row < 1:
        parser.error("--per-row must be at least 1")
    model = load_model(args.model)
    real = args.real or datasets.default_data_path().parent / "real"
    test = datasets.load_splits(args.data, classes=model.classes).test
    signs_images = preprocess.scale(test.images)
    crops = real_set(real / "hands_crops", model.classes, model.image_size)

    rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # title, images, labels, probabilities
    signs_probabilities = predict(model, signs_images)
    crop_probabilities = predict(model, crops.images)
    signs_answers, crop_answers = signs_probabilities.argmax(1), crop_probabilities.argmax(1)
    class_index = model.classes.index
    for digit in ("4", "5"):
        chosen = pick(torch.nonzero(test.labels == class_index(digit)).flatten().tolist(), args.per_row)
        rows.append((f'SIGNS test "{digit}"', signs_images[chosen], test.labels[chosen], signs_probabilities[chosen]))
    groups = [('real "4" read as "5"', (crops.labels == class_index("4")) & (crop_answers == class_index("5"))),
              ('real "4" read right', (crops.labels == class_index("4")) & (crop_answers == class_index("4"))),
              ('real "1" read wrong', (crops.labels == class_index("1")) & (crop_answers != class_index("1"))),
              ('real "1" read right', (crops.labels == class_index("1")) & (crop_answers == class_index("1")))]
    for title, mask in groups:
        chosen = pick(torch.nonzero(mask).flatten().tolist(), args.per_row)
        rows.append((title, crops.images[chosen], crops.labels[chosen], crop_probabilities[chosen]))

    # On SIGNS photos the hand's mask is known: how much of each map's weight falls on the hand.
    signs_answer_maps = grad_cam(model.network, signs_images, signs_answers, args.stage)
    hands = hand_mask(signs_images)[:, 0]
    lit = signs_answer_maps.sum((1, 2)) > 0  # an all-0 map says nothing about where
    on_hand = (signs_answer_maps * hands).sum((1, 2))[lit] / signs_answer_maps.sum((1, 2))[lit]
    hand_area = hands.mean((1, 2))
    print(f"SIGNS test photos: share of the answer's Grad-CAM weight on the hand (stage {args.stage}): "
          f"median {on_hand.median():.2f}, 10th percentile {on_hand.quantile(0.1):.2f} "
          f"(the hand covers {hand_area.median():.2f} of a photo, median; {int((~lit).sum())} maps all 0, left out)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), args.per_row, figsize=(1.3 * args.per_row, 1.55 * len(rows)),
                                squeeze=False)
    for r, (title, images, labels, probabilities) in enumerate(rows):
        answers = probabilities.argmax(1)
        maps = grad_cam(model.network, images, answers, args.stage) if len(images) else images
        for k, axis in enumerate(axes[r]):
            axis.set_axis_off()
            if k >= len(images):
                continue
            axis.imshow(images[k].permute(1, 2, 0).numpy())
            axis.imshow(maps[k].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            answer = model.classes[answers[k]]
            right = answer == model.classes[labels[k]]
            axis.set_title(f"{answer} {probabilities[k, answers[k]]:.0%}", fontsize=7,
                           color="green" if right else "red")
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    figure.suptitle(f"Grad-CAM of the answer (stage {args.stage}): {Path(args.model).parent.name}", fontsize=9)
    figure.tight_layout(rect=(0.1, 0, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
