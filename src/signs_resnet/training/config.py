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
    # 72, not 60: the thumbless 5s cost SIGNS test photos at 60 (docs/robustness.md, "A 5 without its thumb").
    epochs: int = 72
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # Label smoothing leaves the softmax under-confident: fitted on val_signs in the recipe's hold-out run, and
    # whenever a validation split is held out (docs/accuracy.md, "Calibration").
    temperature: float = 0.65
    # The top probability a confident answer needs (answer.is_confident), fixed on shifted val_signs photos in
    # the same hold-out run (docs/accuracy.md, "Confidence").
    confidence_threshold: float = 0.812
    # An answer's probabilities are the network's ^ network_weight x the landmarks' ^ landmark_weight
    # (answer.posterior), the weights fitted on shifted val_signs photos in the same hold-out run
    # (docs/robustness.md, "The combination").
    network_weight: float = 0.105
    landmark_weight: float = 2.1
    augment: bool = True
    # The share of each batch composited onto procedural backgrounds (augment.py), falling to none by the last
    # step ("linear") so that SIGNS' own photos are not lost (docs/robustness.md, "The default: backgrounds,
    # falling to none").
    background_probability: float = 0.6
    background_schedule: str = "linear"
    # The share of the 4s in each batch swapped for a 5 with its thumb painted out (synthetic.thumbless_photos): a
    # 4 as people show it, thumb folded away (docs/robustness.md, "A 5 without its thumb").
    thumbless_probability: float = 0.1
    seed: int = 0
    hold_out_validation: bool = False
    # Seconds between checkpoints, at epoch ends (0: every epoch): each stalls training while it is encoded
    # (docs/performance.md, "What paid, and what did not").
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
              ("network_weight", config.network_weight >= 0, "at least 0"),
              ("landmark_weight", config.landmark_weight >= 0, "at least 0"),
              ("background_probability", 0 <= config.background_probability <= 1, "in [0, 1]"),
              ("thumbless_probability", 0 <= config.thumbless_probability <= 1, "in [0, 1]"),
              ("checkpoint_every_s", config.checkpoint_every_s >= 0, "at least 0")]
    for name, within, wanted in ranges:  # written so that NaN fails every comparison
        if not within:
            raise ValueError(f"{name} must be {wanted}, got {getattr(config, name)!r}")
    if config.background_schedule not in BACKGROUND_SCHEDULES:
        raise ValueError(f"background_schedule must be one of {', '.join(BACKGROUND_SCHEDULES)}, "
                         f"got {config.background_schedule!r}")
