"""The training recipe: fit(config) trains ResNet50 on SIGNS and writes the model artifact.

The whole dataset lives in memory as one uint8 tensor (on the GPU when there is one); batches are
indexed, scaled and augmented as tensors, so there is no per-image Python in the loop.
Under torchrun each process trains on its shard with DistributedDataParallel (distributed.py).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import resource
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from signs_resnet import artifact
from signs_resnet.data import datasets, preprocess
from signs_resnet.data.preprocess import to_input
from signs_resnet.extras import MissingExtra
from signs_resnet.hands.detector import use_int8
from signs_resnet.model import ResNet50, training_layout
from signs_resnet.model_file import save_model
from signs_resnet.training import distributed
from signs_resnet.training.augment import AugmentConfig, augment
from signs_resnet.training.config import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PRECISIONS,
    TrainConfig,
    check_config,
)
from signs_resnet.training.evaluate import evaluate, fit_temperature, logits_of, plot_confusion, plot_curves
from signs_resnet.training.synthetic import Thumbless

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised once the last complete epoch's checkpoint is safely on disk."""


def learning_rate_at(step: int, total_steps: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def scheduled(probability: float, step: int, total_steps: int, config: TrainConfig) -> float:
    """The share of this step's batch composited onto backgrounds under config.background_schedule
    (checked by check_config)."""
    if config.background_schedule == "linear":
        return probability * (1 - step / total_steps)
    return probability


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" on a GPU with bfloat16 and on CPUs with AMX or AVX512-BF16, else "fp32".

    Without those instructions oneDNN emulates bf16, and a bf16 training step is far slower than an fp32 one;
    with AMX bf16 is the faster one (docs/performance.md, "Training speed").
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    capabilities = torch.cpu.get_capabilities()
    native_bf16 = capabilities.get("amx_bf16", False) or capabilities.get("avx512_bf16", False)
    return "bf16" if native_bf16 else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def steps_per_epoch(num_images: int, config: TrainConfig, context: distributed.Context) -> int:
    local_batch_size = distributed.local_batch_size(config.batch_size, context)
    return math.ceil(distributed.shard_size(num_images, context) / local_batch_size)


def train_one_epoch(model, optimizer, images, labels, config: TrainConfig, generator: torch.Generator,
                    first_step: int, total_steps: int, device: torch.device,
                    context: distributed.Context = distributed.Context(),
                    augment_generator: torch.Generator | None = None,
                    thumbless: Thumbless | None = None) -> dict[str, float]:
    """One pass over this process's shard; `generator` shuffles (the same on every process),
    `augment_generator` (default: `generator`) draws the augmentations, and `thumbless` 5s are swapped in for
    4s at config.thumbless_probability. Returns metrics over all processes."""
    model.train()
    batch_size = distributed.local_batch_size(config.batch_size, context)
    steps = steps_per_epoch(len(labels), config, context)
    order = distributed.shard(torch.randperm(len(labels), generator=generator), context).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    batches = tqdm(range(steps), disable=not (config.progress and context.is_main), leave=False, unit="batch")
    for i in batches:
        index = order[i * batch_size:(i + 1) * batch_size]
        x, y = to_input(images[index]), labels[index]
        if thumbless is not None:
            x = thumbless.swap_in(x, y, config.thumbless_probability, augment_generator or generator)
        if config.augment:
            x = augment(x, augment_generator or generator,
                        AugmentConfig(background_probability=scheduled(config.background_probability,
                                                                       first_step + i, total_steps, config)))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(first_step + i, total_steps, config, steps)
        with autocast(device, config.precision):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i == 0:
            distributed.fail_if_requested(context)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    if context.enabled:  # every process's sums; padded repeats count as DistributedSampler's do
        seen = torch.tensor(float(len(order)), device=device)
        loss_sum, correct, seen = distributed.sum_over_ranks(torch.stack([loss_sum, correct.float(), seen]),
                                                             context).tolist()
        return {"loss": loss_sum / seen, "accuracy": correct / seen}
    return {"loss": loss_sum.item() / len(labels), "accuracy": correct.item() / len(labels)}


@torch.no_grad()
def recalibrate_batch_norm(model: torch.nn.Module, images: torch.Tensor, batch_size: int,
                           device: torch.device, precision: str) -> None:
    """Re-estimate every batch norm's running statistics as exact averages over the training images.

    The running averages collected during training lag behind the weights (the original Keras
    recipe's momentum 0.99 left them far off: docs/training.md, "The recipe").
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(images), batch_size):
        with autocast(device, precision):
            model(to_input(images[start:start + batch_size]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _checkpoint_state(model, optimizer, generator, epoch, history) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": epoch,
        "history": history,
    }


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    artifact.atomic_write(path, buffer.getvalue().encode())


def fit(config: TrainConfig) -> dict[str, Any]:
    """Train with `config`, write the model, metrics and plots into config.out; return the summary.

    Under torchrun every process calls fit(); rank 0 alone writes files and returns the full summary.
    """
    check_config(config)
    int8_before = use_int8(False)  # the training photos' cut-outs by the fp32 hand models: the same on every CPU
    try:
        context = distributed.Context.from_environment()
        device = distributed.start(context)
        try:
            return _fit(config, context, device)
        finally:
            distributed.stop(context)
    finally:
        use_int8(int8_before)  # a process that trains and then predicts answers as the product does


def _fit(config: TrainConfig, context: distributed.Context, device: torch.device) -> dict[str, Any]:
    started = time.perf_counter()
    config = dataclasses.replace(config, precision=resolve_precision(config.precision, device))
    if context.is_main:
        log.info("training on %s in %s", device.type, config.precision)
    out = Path(config.out)
    splits = datasets.load_splits(config.data, config.hold_out_validation)
    if splits.train is None:
        raise ValueError(f"{config.data or datasets.default_data_path()}: holds no training split")
    train_set = splits.train
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    input_shape = (*train_set.images.shape[2:], 3)
    model = training_layout(ResNet50(input_shape, len(train_set.classes)).to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=True)
    history: list[dict[str, float]] = []
    first_epoch = 0
    checkpoint_path = out / CHECKPOINT_FILE
    resumed = None
    if context.is_main and config.resume and checkpoint_path.exists():
        resumed, saved_config, _ = artifact.load(checkpoint_path, "checkpoint")
        _check_resumable(saved_config, config, checkpoint_path)
        log.info("resuming from %s after epoch %d", checkpoint_path, resumed["epoch"])
    resumed = distributed.broadcast_from_main(resumed, context)  # only rank 0 needs the output folder
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        _load_optimizer_state(optimizer, resumed["optimizer"])
        generator.set_state(resumed["generator"])
        first_epoch, history = resumed["epoch"], resumed["history"]
    network = distributed.wrap(model, device, context)
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    thumbless = None
    if config.augment and config.thumbless_probability > 0:
        thumbless_started = time.perf_counter()
        thumbless = Thumbless.of(train_set.images, train_set.labels, train_set.classes)
        if isinstance(thumbless, str):
            if context.is_main:
                log.warning("training without thumbless 5s: %s", thumbless)
            thumbless = None
        else:
            thumbless = dataclasses.replace(thumbless, images=thumbless.images.to(device))
            if context.is_main:
                log.info("thumbs painted out of %d of %d 5s in %.1f s", len(thumbless.images),
                         int((train_set.labels == train_set.classes.index("5")).sum()),
                         time.perf_counter() - thumbless_started)
    steps = steps_per_epoch(len(labels), config, context)
    # Checkpoints are encoded between epochs and written to disk while the next epoch trains (encoding
    # in the background too would take CPU time from training's threads and cost far more than it saves).
    # One writer thread: files land in the order they were submitted.
    writer = ThreadPoolExecutor(max_workers=1)
    pending: Future | None = None
    saved_epoch = first_epoch
    last_checkpoint = time.perf_counter()
    try:
        for epoch in range(first_epoch, config.epochs):
            epoch_started = time.perf_counter()
            metrics = train_one_epoch(network, optimizer, images, labels, config, generator,
                                      epoch * steps, config.epochs * steps, device, context,
                                      distributed.augmentation_generator(generator, config.seed, epoch, context),
                                      thumbless)
            if not context.is_main:
                continue
            row = {"epoch": epoch + 1, "train_loss": metrics["loss"], "train_accuracy": metrics["accuracy"]}
            if splits.val is not None:
                val = evaluate(model, splits.val, device=device)
                row |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            row["seconds"] = time.perf_counter() - epoch_started
            history.append(row)
            log.info("epoch %d/%d %s", epoch + 1, config.epochs,
                     " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch"))
            if pending:
                pending.result()
            checkpoint = None
            if time.perf_counter() - last_checkpoint >= config.checkpoint_every_s:
                state = _checkpoint_state(model, optimizer, generator, epoch + 1, history)
                checkpoint, _ = artifact.encode("checkpoint", state, dataclasses.asdict(config))
                last_checkpoint, saved_epoch = time.perf_counter(), epoch + 1
            pending = writer.submit(_write_epoch_files, out, checkpoint, list(history))
    except KeyboardInterrupt:  # `finally` below waits for the checkpoint's write before this leaves _fit
        if saved_epoch:
            raise Interrupted(f"the checkpoint after epoch {saved_epoch} is in {checkpoint_path}; "
                              "continue with --resume") from None
        raise Interrupted("before the first epoch ended; nothing saved") from None
    finally:
        if pending:
            pending.result()
        writer.shutdown()

    model = distributed.unwrap(network)
    if context.enabled:
        digests = distributed.check_replicas_identical(model, context)
        if context.is_main:
            log.info("parameters identical on all %d processes: %s", context.world_size, " ".join(digests))
    recalibrate_batch_norm(model, images, 128, device, config.precision)  # every rank: SyncBatchNorm needs all
    if not context.is_main:
        return {"rank": context.rank}
    summary: dict[str, Any] = {"train_seconds": time.perf_counter() - started, "peak_memory": peak_memory(device)}
    temperature = config.temperature
    if splits.val is not None:
        temperature = fit_temperature(logits_of(model, splits.val, device), splits.val.labels)
        summary["val"] = evaluate(model, splits.val, temperature, device=device)
    if splits.test is not None:
        summary["test"] = evaluate(model, splits.test, temperature, device=device)
    summary["temperature"] = temperature
    processes = {"processes": context.world_size} if context.enabled else {}
    metadata = {
        "temperature": temperature,
        "confidence_threshold": config.confidence_threshold,
        "network_weight": config.network_weight,
        "landmark_weight": config.landmark_weight,
        "classes": train_set.classes,
        "input_shape": list(input_shape),
        "preprocessing": preprocess.PREPROCESSING,
        "training": dataclasses.asdict(config) | {"device": device.type, "train_size": len(train_set)} | processes,
        "metrics": {k: _scalar_metrics(v) if isinstance(v, dict) else v for k, v in summary.items()},
        "history": history,
    }
    summary["model"] = str(out / MODEL_FILE)
    summary["checksum"] = save_model(out / MODEL_FILE, model, metadata)
    try:
        plot_curves(history, out / "curves.png")
        if splits.test is not None:
            plot_confusion(summary["test"], out / "confusion.png")
    except MissingExtra as missing:  # the model is written; the pictures are a convenience
        log.warning("no curves.png or confusion.png: %s", missing)
    return summary


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (GPU, max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (max resident set)"


def _write_epoch_files(out: Path, checkpoint: bytes | None, history: list[dict]) -> None:
    """The checkpoint (when one is due), then metrics.csv: a metrics row means its checkpoint, if any, is on disk."""
    if checkpoint is not None:
        artifact.atomic_write(out / CHECKPOINT_FILE, checkpoint)
    _write_metrics(out / METRICS_FILE, history)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k in ("accuracy", "loss", "ece", "n")}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a saved optimizer state (its JSON keys back to ints) with each moment in its parameter's memory layout.

    The fused AdamW walks a parameter and its moments as flat memory: moments read back in the default
    layout for channels-last weights would pair the wrong elements and silently corrupt the resumed run.
    """
    optimizer.load_state_dict(saved | {"state": {int(k): v for k, v in saved["state"].items()}})
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    ignored = {"progress", "resume", "out", "checkpoint_every_s"}
    # A setting added since the checkpoint was written had its default then.
    defaults = dataclasses.asdict(TrainConfig())
    different = [k for k, v in dataclasses.asdict(config).items()
                 if k not in ignored and saved.get(k, defaults[k]) != v]
    if different:
        raise ValueError(f"{path}: was written with different settings ({', '.join(different)}); "
                         "resume with the same options or use another --out")
    # A setting retired since then is no difference while it was off (0), as every retired one is by default.
    retired = [f"{k}={v}" for k, v in saved.items() if k not in defaults and v not in (0, 0.0, False, None)]
    if retired:
        raise ValueError(f"{path}: was written with settings this version no longer has ({', '.join(retired)}); "
                         "resume it with the version that wrote it, or use another --out")
