"""How fast does the model train here, against a plain fp32 eager loop and against the hardware?

    .venv/bin/python benchmarks/train_speed.py [--rounds 5] [--steps 8] [--skip-full] [--data PATH] [--out DIR]

One run prints:
1. the matrix-multiply peak of this machine, measured now (fp32 and bf16, 2048^3 products);
2. one training step at batch 32, our step (train.train_one_epoch's: the default precision, which is bf16
   autocast on GPUs and CPUs with AMX or AVX512-BF16 and fp32 elsewhere, channels last, fused AdamW, batched
   augmentation) against the plain baseline (fp32, NCHW, torch.optim.Adam, no augmentation), alternated in
   rounds so machine noise hits both alike: medians, images/s, s/epoch, ratio; the achieved TFLOP/s (FLOPs
   counted by torch.utils.flop_counter) against the measured peak of the faster dtype;
3. the full default training (`signs train`, as `make run` does it) in a subprocess: wall time, test
   accuracy and peak memory (max RSS on CPU, max allocated on GPU).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from signs_resnet.data import datasets, preprocess
from signs_resnet.model import MatmulConv2d, ResNet50, training_layout  # noqa: E402
from signs_resnet.training import config, train
from signs_resnet.training.augment import AugmentConfig, augment  # noqa: E402

BATCH = 32
EPOCH_IMAGES = 1080


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    """Best TFLOP/s of a size^3 matrix product."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best / 1e12


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Loop:
    """A model, its optimizer and a step function, on fixed real training photos."""

    def __init__(self, ours: bool, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                 precision: str = "fp32", augmentation: AugmentConfig = AugmentConfig()):
        torch.manual_seed(0)
        self.ours, self.device, self.precision, self.augmentation = ours, device, precision, augmentation
        self.model = ResNet50().to(device)
        if not ours:  # plain convolutions everywhere (ours trains some as matrix products)
            for module in self.model.modules():
                if isinstance(module, MatmulConv2d):
                    module.__class__ = torch.nn.Conv2d
        if ours:
            self.model = training_layout(self.model)
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.images, self.labels = images.to(device), labels.to(device)
        self.generator = torch.Generator().manual_seed(0)
        self.model.train()

    def step(self, index: torch.Tensor) -> None:
        x, y = self.images[index], self.labels[index]
        if self.ours:
            x = augment(train.to_input(x), self.generator, self.augmentation)
            with train.autocast(self.device, self.precision):
                logits = self.model(x)
        else:
            logits = self.model(preprocess.scale(x))
        loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def seconds_per_step(self, steps: int) -> float:
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(1))
        synchronize(self.device)
        started = time.perf_counter()
        for i in range(steps):
            self.step(order[(i * BATCH) % (len(order) - BATCH):][:BATCH])
        synchronize(self.device)
        return (time.perf_counter() - started) / steps


def flops_per_step(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> int:
    loop = Loop(False, images[:BATCH], labels[:BATCH], device)
    with FlopCounterMode(display=False) as counter:
        loop.step(torch.arange(BATCH))
    return counter.get_total_flops()


def full_training(data_path: str | None, out: str | None) -> dict:
    """`signs train` with its defaults, in a fresh process: wall time, test accuracy, peak memory."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "signs_resnet", "train", "--out", out or scratch, "--no-progress"]
        if data_path:
            command += ["--data", data_path]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"signs train failed:\n{result.stderr}")
        accuracy = re.search(r"test accuracy: ([\d.]+)", result.stdout)
        peak = re.search(r"peak memory: (.+)", result.stdout)
    return {"seconds": seconds, "accuracy": float(accuracy[1]), "peak_memory": peak[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating baseline/ours measurements")
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    parser.add_argument("--data", default=None)
    parser.add_argument("--skip-full", action="store_true", help="skip the full default training")
    parser.add_argument("--out", help="keep the full training's model and plots in this folder (default: discard)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--other-precision", action="store_true",
                        help="also time our step in the precision the default does not choose here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")

    peak_fp32, peak_bf16 = matmul_peak(torch.float32, device), matmul_peak(torch.bfloat16, device)
    print(f"matmul peak (2048^3, measured now): fp32 {peak_fp32:.2f} TFLOP/s, bf16 {peak_bf16:.2f} TFLOP/s")
    peak = max(peak_fp32, peak_bf16)

    train_set = datasets.load_splits(args.data).train
    flops = flops_per_step(train_set.images, train_set.labels, device)
    precision = train.resolve_precision(config.TrainConfig().precision, device)
    recipe = AugmentConfig(background_probability=config.TrainConfig().background_probability)
    loops = {"baseline": Loop(False, train_set.images, train_set.labels, device),
             "ours": Loop(True, train_set.images, train_set.labels, device, precision, recipe)}
    other = {"bf16": "fp32", "fp32": "bf16"}[precision]
    if args.other_precision:
        loops["other"] = Loop(True, train_set.images, train_set.labels, device, other, recipe)
    if recipe.background_probability > 0:  # what compositing costs: the same step without it
        loops["plain"] = Loop(True, train_set.images, train_set.labels, device, precision,
                              AugmentConfig(background_probability=0.0))
    for loop in loops.values():  # warm-up: allocator, oneDNN kernel selection
        loop.seconds_per_step(3)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for key, loop in loops.items():
            times[key].append(loop.seconds_per_step(args.steps))
    rows = {key: statistics.median(values) for key, values in times.items()}

    print(f"\ntraining step, batch {BATCH}, {flops / 1e9:.0f} GFLOP per step (forward + backward), "
          f"medians of {args.rounds} x {args.steps} steps")
    print("| loop | ms/step | images/s | s/epoch (1080 images) | TFLOP/s | of peak | vs baseline |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    labels = {"baseline": "plain fp32 eager (NCHW, Adam)",
              "ours": f"ours ({precision}, channels-last, fused AdamW, aug., backgrounds "
                      f"{recipe.background_probability:g})",
              "other": f"ours in {other} (not the default here)",
              "plain": "ours without background compositing"}
    for key, seconds in rows.items():
        tflops = flops / seconds / 1e12
        print(f"| {labels[key]} | {seconds * 1000:.0f} | {BATCH / seconds:.0f} | {EPOCH_IMAGES / BATCH * seconds:.1f} "
              f"| {tflops:.2f} | {tflops / peak:.0%} | {rows['baseline'] / seconds:.2f}x |")
    figures = {"device": name, "peak_tflops": {"fp32": peak_fp32, "bf16": peak_bf16}, "gflop_per_step": flops / 1e9,
               "ms_per_step": {k: v * 1000 for k, v in rows.items()}, "speedup": rows["baseline"] / rows["ours"],
               "precision": precision}
    if "plain" in rows:
        print(f"background compositing at {recipe.background_probability:g}: "
              f"{rows['ours'] / rows['plain']:.3f}x the step without it")
        figures["compositing_cost"] = rows["ours"] / rows["plain"]

    if not args.skip_full:
        full = full_training(args.data, args.out)
        print(f"\nfull default training (`signs train`, start-up and evaluation included): "
              f"{full['seconds']:.1f} s wall, test accuracy {full['accuracy']:.2%}, peak memory {full['peak_memory']}")
        figures["full_training"] = full
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
