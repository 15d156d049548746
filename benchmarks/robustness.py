"""Robustness on photos unlike SIGNS: accuracy, per-class accuracy, calibration and confident answers.

    python benchmarks/robustness.py --model runs/default/model.safetensors [--out DIR]
    python benchmarks/robustness.py --seeds 0 1 2 [--epochs N] [--hold-out-validation]
                                    [--set FIELD=VALUE ...] [--out DIR]
    python benchmarks/robustness.py --model runs/holdout/model.safetensors --framing 1.2 1.5 1.8
    python benchmarks/robustness.py --augmented-grid docs/robustness_augmented.jpg
    python benchmarks/robustness.py --thumbless-grid docs/robustness_thumbless.jpg

For a model file, or for the default recipe (`signs train`, with any TrainConfig field changed by --set)
trained once per seed, it measures on
  test_signs.h5      the official SIGNS test split
  val_signs          when the model was trained with --hold-out-validation (its metadata says)
  real/hands_crops   webcam photos of hands by other people, each hand cut out (all six classes; its 0s are
                     fists and its 3s middle, ring and little finger: ../shared/data/README.md)
  real/hands_frames  the whole webcam frames those hands are in
  test_signs.h5 x4   the test split enlarged 4x, as a camera at a higher resolution would give them, so the
                     hand finder frames them and counts their fingers: SIGNS photos through the user's path
  val_signs x4       the same for val_signs, for a hold-out model
Every file goes through preprocess.prepare (the hand found, cut out and read), the path `signs predict` and
the server take; the network's probabilities come from predict() (PyTorch fp32, the model's temperature), which
the server's engines match to ~0.04, and are combined with the hand's reading as every answer's are
(answer.posterior). Per set and model the table gives the answer, the network alone and the landmarks alone (the
reading's count; no hand: wrong), each with its accuracy per class (real/'s 0s are fists and its 3s middle, ring
and little finger; test_signs' 0s are O's), then ECE, hands found and the confident answers; then the targets
line of the real-photo issue, on the medians over the models.

Confident answers: the product's rule (answer.is_confident): a hand was found (never in 64x64 photos, read as
they are), its reading counts as many fingers as the answer, and the top probability reaches the model's stored
threshold. For a hold-out model (trained on train_signs alone) it first fixes the recipe's answer settings from
SIGNS data alone and measures with them: the val_signs photos, each composited onto procedural backgrounds and
augmented like training photos, enlarged 4x and read as the product reads a photo, are answered by the network
and the reading; the combination's ratio is the one with the most of them right, the photos shown SIGNS' way
and those shown other ways weighing half each (fit_combination), then both weights are scaled together to the
least log loss on the photos shown SIGNS' way (fit_sharpness), and the threshold the lowest probability above which the
confident answers among those are >= 98% right (confident_threshold). real/ is only measured here: nothing is
fitted to it; it is the set recipes are chosen with, not a clean test (docs/robustness.md, "What real/ chose").

--out DIR writes results.json, and for each model grids of real photos with its answers (right in green,
wrong in red, the hand's square in yellow): DIR/<model>/<set>.png (a sample), DIR/<model>/<set>_read.png (the
same photos as the network read them: the hand cut out) and DIR/<model>/<set>_errors.png.
--framing F ... measures each --model at each framing of the hand (a square F times the hand's landmarks).
--augmented-grid FILE draws training photos as they are (first row) and three draws of the default
recipe's augmentation at its first step (its largest background share), seeded.
--thumbless-grid FILE draws training 5s (first row) and the same with the thumb painted out, as the recipe
swaps them in for 4s (synthetic.thumbless_photos).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet import (
    answer,
    load_model,  # noqa: E402
)
from signs_resnet.data import datasets, preprocess
from signs_resnet.hands import geometry
from signs_resnet.inference.forward import predict
from signs_resnet.scores import expected_calibration_error  # noqa: E402
from signs_resnet.training import synthetic
from signs_resnet.training.augment import AugmentConfig, augment, composite_backgrounds  # noqa: E402
from signs_resnet.training.config import TrainConfig  # noqa: E402
from signs_resnet.training.train import fit  # noqa: E402

REAL_SETS = ("hands_crops", "hands_frames")
# The share of confident answers that should be right on the shifted SIGNS reference photos.
CONFIDENT_ACCURACY = 0.98
REFERENCE_COPIES = 4  # shifted copies of each val_signs photo, shown SIGNS' way and other ways
# Counts shown with other fingers than SIGNS shows them, made from val_signs photos by painting fingers out
# (synthetic.fingers_painted_out; 0 thumb, 1 index ... 4 little): class -> (fingers painted out, the count left).
OTHER_WAYS = {"1": [((1,), "0")], "2": [((1,), "1"), ((2,), "1")], "3": [((1,), "2"), ((0,), "2")],
              "4": [((1,), "3"), ((4,), "3")], "5": [((1,), "4"), ((0,), "4")]}
# The real-photo issue's targets (median over seeds).
TARGETS = {"crops": 0.93, "frames": 0.95, "real_class": 0.85, "crops_found": 0.96, "test_median": 0.983,
           "test_min": 0.975, "ece": 0.06, "confident_accuracy": 0.98, "confident_coverage": 0.75, "parts": 0.005}
# The combination's ratio a : b is searched on this grid (answer.posterior: p_net^a x p_count^b).
RATIOS = [round(0.01 * i, 2) for i in range(301)]  # 0 to 3
SHARPNESS = [round(0.05 * i, 2) for i in range(10, 61)]  # 0.5 to 3: both weights times one factor (fit_sharpness)


@dataclasses.dataclass
class PhotoSet:
    name: str
    images: torch.Tensor  # float N x 3 x H x W in [0, 1], the model's input
    labels: torch.Tensor  # int64 N, indices into the model's classes
    files: list[Path] | None = None  # the photos' files, for the grids
    # where the hand was looked for and found (preprocess.Framing), one per photo; None: photos read as they are
    framings: list[preprocess.Framing] | None = None

    def framing(self, index: int) -> preprocess.Framing:
        """Where photo `index` was read: preprocess.Framing() (not looked for) for photos read as they are."""
        return self.framings[index] if self.framings else preprocess.Framing()

    def hands_found(self) -> torch.Tensor:
        """Per photo, whether its hand was found (never in photos read as they are, not looked for)."""
        return torch.tensor([self.framing(i).hand_found for i in range(len(self.labels))])

    def posterior(self, model, probabilities: torch.Tensor) -> torch.Tensor:
        """The product's answers: the network's probabilities combined with each photo's hand's reading
        (answer.posterior)."""
        return torch.tensor([answer.posterior(model, row, self.framing(i)) for i, row in enumerate(probabilities.tolist())])

    def landmarks(self, classes: list[str]) -> torch.Tensor:
        """The landmarks alone: per photo, each class's probability as the hand's reading gives its count (all
        zero where no hand was read: wrong)."""
        rows = []
        for i in range(len(self.labels)):
            reading = self.framing(i).reading
            rows.append([reading.counts[int(c)] if reading else 0.0 for c in classes])
        return torch.tensor(rows)

    def confident(self, model, probabilities: torch.Tensor) -> torch.Tensor:
        """Per photo, whether the product marks its answer confident (answer.is_confident)."""
        return torch.tensor([answer.is_confident(model, row, self.framing(i)) for i, row in enumerate(probabilities.tolist())])


# --- metrics ----------------------------------------------------------------------------------


def confident_threshold(probabilities: torch.Tensor, labels: torch.Tensor,
                        accuracy: float = CONFIDENT_ACCURACY) -> float:
    """The lowest top probability t such that the answers with probability >= t are at least `accuracy`
    right (1.0 when no threshold gets there)."""
    top, predicted = probabilities.max(1)
    order = torch.argsort(top, descending=True)
    correct = (predicted[order] == labels[order]).float()
    running = correct.cumsum(0) / torch.arange(1, len(correct) + 1)
    good = torch.nonzero(running >= accuracy).flatten()
    if len(good) == 0:
        return 1.0
    last = int(good[-1])  # the largest confident set that is still right enough
    return float(top[order][last])


def summarise(probabilities: torch.Tensor, labels: torch.Tensor, classes: list[str], threshold: float,
              hands_found: torch.Tensor, confident: torch.Tensor, network: torch.Tensor, landmarks: torch.Tensor) -> dict:
    """Accuracy, per-class accuracy (classes present only), ECE, the share of photos whose hand was found, and
    the coverage and accuracy of the answers marked `confident` (the product's rule, PhotoSet.confident) of the
    product's answers (`probabilities`, PhotoSet.posterior); `threshold` is reported with them. Accuracy and
    ECE of the `network`'s own probabilities, and of the `landmarks` alone (the reading's count; no hand: wrong),
    beside, each per class too."""
    def per_class(probs: torch.Tensor) -> dict[str, float]:
        right = (probs.argmax(1) == labels) & (probs.sum(1) > 0)
        return {classes[c]: right[labels == c].float().mean().item() for c in labels.unique().tolist()}

    correct = probabilities.argmax(1) == labels
    read = landmarks.sum(1) > 0
    return {
        "n": len(labels),
        "accuracy": correct.float().mean().item(),
        "per_class": per_class(probabilities),
        "ece": expected_calibration_error(probabilities, labels),
        "hands_found": hands_found.float().mean().item(),
        "threshold": threshold,
        "confident_coverage": confident.float().mean().item(),
        "confident_accuracy": correct[confident].float().mean().item() if confident.any() else None,
        "network_accuracy": (network.argmax(1) == labels).float().mean().item(),
        "network_ece": expected_calibration_error(network, labels),
        "network_per_class": per_class(network),
        "landmarks_accuracy": ((landmarks.argmax(1) == labels) & read).float().mean().item(),
        "landmarks_per_class": per_class(landmarks),
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_table(rows: list[dict]) -> str:
    """A markdown table, one row per (model, set) result with its `model`, `set` and optional `train_seconds`: the
    answer, then the network alone and the landmarks alone, each with its accuracy per class."""
    lines = [("| model | set | photos | the answer | per class | ECE | network alone | per class | landmarks alone |"
              " per class | hand found | confident: p >= t | covers | right | train time (s) |"),
             "| :--- | :--- | ---: | ---: | :--- | ---: | ---: | :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: |"]
    classes = lambda shares: " ".join(f"{c}:{a:.0%}" for c, a in shares.items())  # noqa: E731
    for row in rows:
        seconds = f"{row['train_seconds']:.0f}" if row.get("train_seconds") else ""
        lines.append(f"| {row['model']} | {row['set']} | {row['n']} | **{row['accuracy']:.1%}** | "
                     f"{classes(row['per_class'])} | {row['ece']:.3f} | {row['network_accuracy']:.1%} | "
                     f"{classes(row['network_per_class'])} | {row['landmarks_accuracy']:.1%} | "
                     f"{classes(row['landmarks_per_class'])} | {_percent(row.get('hands_found'))} | "
                     f"{row['threshold']:.3f} | {_percent(row['confident_coverage'])} | "
                     f"{_percent(row['confident_accuracy'])} | {seconds} |")
    return "\n".join(lines)


def targets_line(rows: list[dict]) -> str:
    """Met / NOT met for each of the real-photo issue's targets, on the median over the models in `rows`."""
    def median(set_name: str, key: str, pick=lambda v: v) -> float | None:
        values = [pick(r[key]) for r in rows if r["set"] == set_name and r[key] is not None]
        return statistics.median(values) if values else None

    tests = [r["accuracy"] for r in rows if r["set"] == "test_signs.h5"]
    checks = {
        f"hands_crops >= {TARGETS['crops']:.0%}": (median("hands_crops", "accuracy"), TARGETS["crops"]),
        f"hands_frames >= {TARGETS['frames']:.0%}": (median("hands_frames", "accuracy"), TARGETS["frames"]),
        f"hand found on hands_crops >= {TARGETS['crops_found']:.0%}":
            (median("hands_crops", "hands_found"), TARGETS["crops_found"]),
        f"test median >= {TARGETS['test_median']:.1%}":
            (statistics.median(tests) if tests else None, TARGETS["test_median"]),
        f"every seed's test >= {TARGETS['test_min']:.1%}": (min(tests) if tests else None, TARGETS["test_min"]),
    }
    for set_name in REAL_SETS:
        checks[f"every class on {set_name} >= {TARGETS['real_class']:.0%}"] = (
            median(set_name, "per_class", lambda shares: min(shares.values())), TARGETS["real_class"])
        checks[f"confident on {set_name} >= {TARGETS['confident_accuracy']:.0%} right"] = (
            median(set_name, "confident_accuracy"), TARGETS["confident_accuracy"])
        checks[f"... covering >= {TARGETS['confident_coverage']:.0%}"] = (
            median(set_name, "confident_coverage"), TARGETS["confident_coverage"])
    parts = [f"{name}: {'met' if value is not None and value >= target else 'NOT met'} ({_percent(value)})"
             for name, (value, target) in checks.items()]
    for set_name in (*REAL_SETS, "test_signs.h5 x4"):
        answer_, network, landmarks = (median(set_name, key) for key in
                                       ("accuracy", "network_accuracy", "landmarks_accuracy"))
        if answer_ is not None:
            best = max(network, landmarks)
            parts.append(f"the answer on {set_name} >= each part (within {TARGETS['parts']:.1%}): "
                         f"{'met' if answer_ >= best - TARGETS['parts'] else 'NOT met'} "
                         f"({answer_:.1%} against {network:.1%}, {landmarks:.1%})")
    for set_name in REAL_SETS:
        ece = median(set_name, "ece")
        parts.append(f"ECE on {set_name} <= {TARGETS['ece']}: "
                     f"{'met' if ece is not None and ece <= TARGETS['ece'] else 'NOT met'} "
                     f"({'-' if ece is None else f'{ece:.3f}'})")
    return "targets (median over the models): " + "; ".join(parts)


def _read_logs(network: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which photos have a reading (the landmarks' rows that are not all zero), and the network's and the landmarks'
    log-probabilities on those."""
    read = landmarks.sum(1) > 0
    return read, network[read].clamp_min(1e-12).log(), landmarks[read].clamp_min(1e-12).log()


def fit_combination(network: torch.Tensor, landmarks: torch.Tensor, labels: torch.Tensor,
                    groups: torch.Tensor | None = None) -> tuple[float, float]:
    """The weights (a, 1), a on RATIOS, or (1, 0), the network alone, whose answers p_net^a x p_count
    (answer.posterior) are right on the largest share of the photos with a reading, ties to the least log loss.
    The ratio decides only which class wins, so it is chosen for answers right; how sure they are is
    fit_sharpness's. With `groups` (an integer per photo) each group weighs the same, however many photos it
    holds: the mean of the groups' shares right."""
    read, log_net, log_count = _read_logs(network, landmarks)
    if not read.any():
        return 1.0, 0.0  # nothing to weigh the reading on: the network alone
    group = torch.zeros(int(read.sum()), dtype=torch.long) if groups is None else groups[read]
    sizes = torch.bincount(group).double()
    present = sizes > 0
    weight = 1 / sizes[group]
    best = None
    for a, b in [(ratio, 1.0) for ratio in RATIOS] + [(1.0, 0.0)]:
        logits = a * log_net + b * log_count
        # shares right from whole counts, so that equal counts tie exactly and the log loss decides
        counts = torch.bincount(group, weights=(logits.argmax(1) == labels[read]).double(), minlength=len(sizes))
        right = round(float((counts[present] / sizes[present]).mean()), 12)
        loss = (torch.nn.functional.cross_entropy(logits, labels[read], reduction="none").double() * weight).sum()
        candidate = (-right, float(loss / weight.sum()), a, b)
        best = candidate if best is None else min(best, candidate)
    return best[2], best[3]


def fit_sharpness(network: torch.Tensor, landmarks: torch.Tensor, labels: torch.Tensor,
                  weights: tuple[float, float]) -> tuple[float, float]:
    """The weights (a, b) times the factor on SHARPNESS' grid whose answers have the least log loss on photos with
    a reading: the same ranking of the classes (the same answers), made as sure as these photos show it can be."""
    read, log_net, log_count = _read_logs(network, landmarks)
    logits = weights[0] * log_net + weights[1] * log_count
    loss, factor = min((torch.nn.functional.cross_entropy(s * logits, labels[read]).item(), s) for s in SHARPNESS)
    return round(weights[0] * factor, 3), round(weights[1] * factor, 3)


# --- photo sets -------------------------------------------------------------------------------


def real_set(folder: Path, classes: list[str], size: int) -> PhotoSet:
    """A real/ folder (class/*.jpg), each file through the product's preprocessing (preprocess.prepare: the hand
    found and cut out, as `signs predict` and the server do); folder names are class labels."""
    files = sorted(f for f in folder.glob("*/*") if f.suffix.lower() in datasets.IMAGE_SUFFIXES)
    unknown = {f.parent.name for f in files} - set(classes)
    if unknown:
        raise ValueError(f"{folder}: classes {sorted(unknown)} are not the model's {classes}")
    labels = torch.tensor([classes.index(f.parent.name) for f in files])
    return prepared_set(folder.name, files, labels, size, files)


def prepared_set(name: str, sources: list, labels: torch.Tensor, size: int,
                 files: list[Path] | None = None) -> PhotoSet:
    """Photos (files or PIL images) through preprocess.prepare, with where each one's hand was found."""
    prepared = [preprocess.prepare(source, size) for source in sources]
    return PhotoSet(name, torch.stack([image for image, _ in prepared]), labels, files,
                    [framing for _, framing in prepared])


def enlarged_set(name: str, images: torch.Tensor, labels: torch.Tensor, factor: int = 4) -> PhotoSet:
    """Photos (uint8 N x 3 x S x S) enlarged `factor` times (bicubic), then through the product's preprocessing:
    as a camera at a higher resolution would give them, so the hand finder frames them and reads their fingers.
    How the user's path treats SIGNS' own photos, measured on photos the model did not see (the test split;
    val_signs for a hold-out model, though the hand's reading was fitted on all 1080 training photos, val_signs
    among them)."""
    from PIL import Image

    size = images.shape[2]
    enlarged = [Image.fromarray(image.permute(1, 2, 0).numpy()).resize((size * factor, size * factor),
                                                                        Image.Resampling.BICUBIC)
                for image in images]
    return prepared_set(f"{name} x{factor}", enlarged, labels, size)


def held_out(model) -> bool:
    """Whether the model was trained with --hold-out-validation (val_signs unseen), as its metadata says."""
    return bool(model.metadata.get("training", {}).get("hold_out_validation"))


def signs_sets(model, data_path: str | None) -> tuple[list[PhotoSet], datasets.Dataset]:
    """test_signs.h5 as it is and enlarged 4x (and val_signs, both ways, for a hold-out model), and the
    val_signs photos for the confidence rule."""
    splits = datasets.load_splits(data_path, hold_out_validation=True, classes=model.classes)
    sets = [PhotoSet("test_signs.h5", preprocess.scale(splits.test.images), splits.test.labels),
            enlarged_set("test_signs.h5", splits.test.images, splits.test.labels)]
    if held_out(model):
        sets += [PhotoSet("val_signs", preprocess.scale(splits.val.images), splits.val.labels),
                 enlarged_set("val_signs", splits.val.images, splits.val.labels)]
    return sets, splits.val


def other_ways(val: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """val_signs photos showing their count with other fingers (OTHER_WAYS; those whose hand was found), and
    their labels: poses the network never saw, as people show them."""
    images, labels = [], []
    for name, ways in OTHER_WAYS.items():
        if name not in val.classes:
            continue
        photos = val.images[val.labels == val.classes.index(name)]
        for fingers, count in ways:
            painted, found = synthetic.fingers_painted_out(photos, fingers)
            images.append(painted[found])
            labels.append(torch.full((int(found.sum()),), val.classes.index(count)))
    return torch.cat(images), torch.cat(labels)


def shifted_reference(val: datasets.Dataset, copies: int = REFERENCE_COPIES, factor: int = 4) -> PhotoSet:
    """Each val_signs photo `copies` times, and `copies` times showing its count with other fingers (other_ways),
    on procedural backgrounds and augmented like training photos (seeded: light, blur, framing), enlarged `factor`
    times and read as the product reads a photo (the hand found, cut out and read): SIGNS photos shifted as real
    photos are, built from SIGNS alone."""
    generator = torch.Generator().manual_seed(0)
    others, other_labels = other_ways(val)
    images = torch.cat([preprocess.scale(val.images).repeat(copies, 1, 1, 1),
                        preprocess.scale(others).repeat(copies, 1, 1, 1)])
    images = augment(composite_backgrounds(images, AugmentConfig(background_probability=1.0), generator), generator)
    pixels = (images * 255).round().clamp(0, 255).byte()
    labels = torch.cat([val.labels.repeat(copies), other_labels.repeat(copies)])
    return enlarged_set("shifted val_signs", pixels, labels, factor)


# --- grids ------------------------------------------------------------------------------------


def plot_answers(photos: PhotoSet, probabilities: torch.Tensor, classes: list[str], path: Path,
                 which: torch.Tensor | None = None, columns: int = 10, rows: int = 6, as_read: bool = False) -> None:
    """A grid of photos (the files as they are, with the square the model read where the hand finder cut
    one; with `as_read`, the 64x64 images the network read instead) titled with the model's answer and its
    probability: green when right, red when wrong; "no hand" when the finder found none. `which` picks the
    photos (default: an even sample of all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    top, predicted = probabilities.max(1)
    if which is None:
        which = torch.arange(len(photos.labels))
    which = which[torch.linspace(0, len(which) - 1, min(len(which), columns * rows)).long()] if len(which) else which
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.45))
    for axis in axes.flat:
        axis.axis("off")
    from_file = bool(photos.files) and not as_read
    for axis, i in zip(axes.flat, which.tolist()):
        image = Image.open(photos.files[i]).convert("RGB") if from_file else photos.images[i].permute(1, 2, 0).numpy()
        axis.imshow(image)
        right = predicted[i] == photos.labels[i]
        framing = photos.framing(i)
        if framing.crop and from_file:
            left, top_edge, right_edge, bottom = framing.crop
            axis.add_patch(plt.Rectangle((left, top_edge), right_edge - left, bottom - top_edge, fill=False,
                                         edgecolor="yellow", linewidth=1))
        axis.set_title(f"{classes[photos.labels[i]]} -> {classes[predicted[i]]} {top[i]:.0%}"
                       f"{' no hand' if framing.searched and not framing.hand_found else ''}", fontsize=7, color="green" if right else "red")
    figure.suptitle(f"{photos.name}{' as the network read them' if as_read else ''}: true -> answer (probability)",
                    fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def augmented_grid(images: torch.Tensor, path: Path, columns: int = 10, draws: int = 3, scale: int = 96) -> None:
    """`columns` evenly spaced photos of `images` (uint8 N x 3 x H x W) as they are, then `draws` rows of the
    default recipe's augmentation at its first step (backgrounds and the rest), as one image file."""
    from PIL import Image

    recipe = TrainConfig()
    config = AugmentConfig(background_probability=recipe.background_probability)
    chosen = images[torch.linspace(0, len(images) - 1, columns).long()]
    photos = preprocess.scale(chosen)
    generator = torch.Generator().manual_seed(0)
    rows = [photos]
    for _ in range(draws):
        rows.append(augment(photos, generator, config))
    grid = torch.cat([torch.cat(list(row), 2) for row in rows], 1)  # 3 x (rows * H) x (columns * W)
    pixels = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    picture = Image.fromarray(pixels)
    picture = picture.resize((picture.width * scale // images.shape[3], picture.height * scale // images.shape[2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=90)


def thumbless_grid(images: torch.Tensor, labels: torch.Tensor, classes: list[str], path: Path, columns: int = 10,
                   scale: int = 96) -> None:
    """`columns` evenly spaced 5s of `images` (uint8 N x 3 x H x W) whose hand is found, above the same with
    the thumb painted out (synthetic.thumbless_photos), as one image file."""
    from PIL import Image

    fives = images[labels == classes.index("5")]
    painted, found = synthetic.thumbless_photos(fives)
    if not found.any():
        raise ValueError("no hand was found in any photo of a 5")
    chosen = torch.nonzero(found).flatten()
    chosen = chosen[torch.linspace(0, len(chosen) - 1, min(columns, len(chosen))).long()]
    grid = torch.cat([torch.cat(list(fives[chosen]), 2), torch.cat(list(painted[chosen]), 2)], 1)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    picture = picture.resize((picture.width * scale // images.shape[3], picture.height * scale // images.shape[2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=90)


# --- running ----------------------------------------------------------------------------------


ANSWER_SETTINGS = ("confidence_threshold", "network_weight", "landmark_weight")  # stored in the model file


def measure(model_path: str, data_path: str | None, real: Path, out: Path | None, name: str,
            settings: dict | None = None) -> list[dict]:
    """The rows of one model; `settings` (ANSWER_SETTINGS) replace what its file stores, as a model trained with
    them would store them."""
    model = load_model(model_path)
    model.metadata.update({k: v for k, v in (settings or {}).items() if k in ANSWER_SETTINGS})
    sets, val = signs_sets(model, data_path)
    sets += [real_set(real / s, model.classes, model.image_size) for s in REAL_SETS]
    if held_out(model):
        reference = shifted_reference(val)
        network = predict(model, reference.images)
        # The weights' ratio (which class wins) from counts shown SIGNS' way and other ways (the painted photos),
        # weighing half each: people show both, and by number the painted would be about 6 in 10. Their scale
        # (how sure the answers are) and the threshold from SIGNS' way alone: a painted-out finger is
        # simply gone where a folded one would show, which makes them harder to be sure of than people's photos
        # (docs/robustness.md, "The combination").
        plain = torch.arange(len(reference.labels)) < len(val.labels) * REFERENCE_COPIES
        landmarks = reference.landmarks(model.classes)
        weights = fit_combination(network, landmarks, reference.labels, (~plain).long())
        weights = fit_sharpness(network[plain], landmarks[plain], reference.labels[plain], weights)
        model.metadata.update(network_weight=weights[0], landmark_weight=weights[1])
        answers = reference.posterior(model, network)
        eligible = torch.tensor([f.hand_found and answer.shows(f, model.classes[int(row.argmax())])
                                 for f, row in zip(reference.framings, answers)]) & plain
        fitted = confident_threshold(answers[eligible], reference.labels[eligible])
        model.metadata["confidence_threshold"] = fitted
        print(f"{name}: fixed on {len(reference.labels)} shifted val_signs photos ({reference.hands_found().float().mean():.1%} "
              f"with a hand): network_weight={weights[0]}, landmark_weight={weights[1]}, "
              f"confidence_threshold={fitted:.3f} (the recipe's), at temperature "
              f"{model.metadata.get('temperature', 1.0):.3f}; measured below with them", flush=True)
    threshold = model.confidence_threshold
    rows = []
    for photos in sets:
        network = predict(model, photos.images)
        probabilities = photos.posterior(model, network)
        rows.append({"model": name, "set": photos.name, "path": model_path, "framing": geometry.FRAMING}
                    | summarise(probabilities, photos.labels, model.classes, threshold, photos.hands_found(),
                                photos.confident(model, probabilities), network, photos.landmarks(model.classes)))
        if out and photos.files:
            plot_answers(photos, probabilities, model.classes, out / name / f"{photos.name}.png")
            plot_answers(photos, probabilities, model.classes, out / name / f"{photos.name}_read.png", as_read=True)
            wrong = torch.nonzero(probabilities.argmax(1) != photos.labels).flatten()
            plot_answers(photos, probabilities, model.classes, out / name / f"{photos.name}_errors.png", wrong)
    return rows


def _parse_setting(text: str) -> tuple[str, object]:
    field, _, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if field not in fields or not value:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with a TrainConfig field, got {text!r}")
    return field, json.loads(value) if value[0] in "0123456789-[{tf" else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", help="model files to measure (instead of training)")
    parser.add_argument("--seeds", type=int, nargs="+", help="train the default recipe for each seed, then measure")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--hold-out-validation", action="store_true")
    parser.add_argument("--set", type=_parse_setting, action="append", default=[], metavar="FIELD=VALUE",
                        help="change a TrainConfig field of the recipe (JSON values: 0.5, true, [1, 2]); with --model, "
                             f"the answer's settings ({', '.join(ANSWER_SETTINGS)}) replace the model file's")
    parser.add_argument("--data", help="SIGNS data (default: $SIGNS_DATA or ../shared/data/signs)")
    parser.add_argument("--real", type=Path, help="real photos (default: real/ beside the SIGNS data)")
    parser.add_argument("--out", type=Path, help="write results.json and the grids of answers here")
    parser.add_argument("--framing", type=float, nargs="+",
                        help="measure each model with each of these hand framings (geometry.FRAMING) instead of the "
                             "product's")
    parser.add_argument("--augmented-grid", type=Path, metavar="FILE",
                        help="draw training photos and their augmentation by the default recipe into FILE")
    parser.add_argument("--thumbless-grid", type=Path, metavar="FILE",
                        help="draw training 5s and the same with the thumb painted out into FILE")
    args = parser.parse_args()
    if args.augmented_grid or args.thumbless_grid:
        train_set = datasets.load_splits(args.data, hold_out_validation=False).train
        if args.augmented_grid:
            augmented_grid(train_set.images, args.augmented_grid)
        if args.thumbless_grid:
            thumbless_grid(train_set.images, train_set.labels, train_set.classes, args.thumbless_grid)
        if not args.model and not args.seeds:
            return
    if not args.model and not args.seeds:
        parser.error("give --model FILE or --seeds N ...")
    real = args.real or datasets.default_data_path().parent / "real"
    rows = []
    for path in args.model or []:
        for framing in args.framing or [geometry.FRAMING]:
            geometry.FRAMING = framing
            name = Path(path).parent.name + (f" framing {framing}" if args.framing else "")
            rows += measure(path, args.data, real, args.out, name, dict(args.set))
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.out or Path(scratch)
        for seed in args.seeds or []:
            config = TrainConfig(data=args.data, out=str(runs / f"seed{seed}"), seed=seed, progress=False,
                                 hold_out_validation=args.hold_out_validation, **dict(args.set))
            if args.epochs:
                config.epochs = args.epochs
            started = time.perf_counter()
            summary = fit(config)
            seconds = time.perf_counter() - started
            print(f"seed {seed}: trained in {seconds:.0f} s", flush=True)
            rows += [row | {"train_seconds": seconds}
                     for row in measure(summary["model"], args.data, real, args.out, f"seed{seed}")]
    print(format_table(rows))
    print(targets_line(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
