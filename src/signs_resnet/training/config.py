"""The training recipe's settings: one dataclass whose defaults are the documented recipe."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.csv"
PRECISIONS = ("auto", "bf16", "fp32")
BACKGROUND_SCHEDULES = ("constant", "linear")


@dataclass
class TrainConfig:
    data: str | None = None
    out: str = "runs/default"
    # 72: the thumbless 5s below cost SIGNS test photos at 60 epochs and not at 72 (docs/robustness.md, "A 5
    # without its thumb"), within the issue's 1.25x of the 60-epoch training time.
    epochs: int = 72
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # Softmax temperature stored with the model: label smoothing leaves it under-confident. Fitted on val_signs
    # in this recipe's hold-out run (docs/accuracy.md, "Calibration"); refitted whenever a validation split is held out.
    temperature: float = 0.65
    # An answer is "confident" only when its top probability (at the temperature above) is at least this (and its
    # hand, where looked for, was found and shows its count: answer.is_confident). Fixed on SIGNS
    # data only, in the same hold-out run: where the answers on shifted val_signs photos are 95% right
    # (docs/accuracy.md, "Confidence").
    confidence_threshold: float = 0.757
    augment: bool = True
    # The share of training images composited onto procedural backgrounds (augment.py); 0: off. "linear": the
    # share falls from it to 0 over training, so the last epochs see SIGNS photos as they are; "constant": it
    # stays. Composited all through, the model read real photos as well but lost SIGNS test photos; falling
    # from 0.6 it keeps both (docs/robustness.md, "The default: backgrounds, falling to none").
    background_probability: float = 0.6
    background_schedule: str = "linear"
    # The share of the 4s in each batch swapped for a 5 with the thumb painted out (synthetic.thumbless_photos),
    # constant through training: people show a 4 with the thumb folded out of sight, SIGNS shows it across the
    # palm, and the network read real 4s as 5s (docs/robustness.md, "A 5 without its thumb"). 0: off.
    thumbless_probability: float = 0.1
    seed: int = 0
    hold_out_validation: bool = False
    # A checkpoint after the first epoch that ends this long after the previous one (0: after every epoch):
    # each stalls training while its 280 MB are encoded, too often for short epochs (docs/performance.md,
    # "What paid, and what did not").
    checkpoint_every_s: float = 30.0
    # "bf16" (autocast), "fp32", or "auto": bf16 where the hardware computes it natively, else fp32 (resolve_precision)
    precision: str = "auto"
    progress: bool = True
    resume: bool = False


def check_config(config: TrainConfig) -> None:
    """A ValueError naming the first setting out of its range (a bad number would crash or train nothing)."""
    ranges = [("epochs", config.epochs >= 1, "at least 1"),
              ("batch_size", config.batch_size >= 1, "at least 1"),
              ("learning_rate", config.learning_rate > 0, "above 0"),
              ("weight_decay", config.weight_decay >= 0, "at least 0"),
              ("warmup_epochs", config.warmup_epochs >= 0, "at least 0"),
              ("label_smoothing", 0 <= config.label_smoothing < 1, "in [0, 1)"),
              ("temperature", config.temperature > 0, "above 0"),
              ("confidence_threshold", 0 <= config.confidence_threshold <= 1, "in [0, 1]"),
              ("background_probability", 0 <= config.background_probability <= 1, "in [0, 1]"),
              ("thumbless_probability", 0 <= config.thumbless_probability <= 1, "in [0, 1]"),
              ("checkpoint_every_s", config.checkpoint_every_s >= 0, "at least 0")]
    for name, within, wanted in ranges:  # written so that NaN fails every comparison
        if not within:
            raise ValueError(f"{name} must be {wanted}, got {getattr(config, name)!r}")
    if config.background_schedule not in BACKGROUND_SCHEDULES:
        raise ValueError(f"background_schedule must be one of {', '.join(BACKGROUND_SCHEDULES)}, "
                         f"got {config.background_schedule!r}")
