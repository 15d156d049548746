"""How long does `signs predict` take on a folder of photos? The whole process, start to exit.

    .venv/bin/python benchmarks/predict_files.py [--model FILE] [--data FOLDER] [--runs 3] [--compare-tree DIR]

Rows, alternated run by run so that both see the same machine load:
  batched   `signs predict --json FOLDER`: parallel decoding, batches of 64 on the server's engine (auto)
  baseline  `signs predict --json --engine torch-fp32 --batch-size 1 FOLDER`: one photo per forward pass in
            eager fp32, as `signs predict` classified before it ran batches
With --compare-tree DIR the baseline is instead
  tree:REV  `signs predict --json FOLDER` of another commit's worktree (`git worktree add DIR REV`; its src/ first
            on the path), in the same run
Each row: the median wall time over --runs, photos per second, the baseline's time over the row's, and the share
of photos answered their folder's name (where the folders are named by class); then how many photos' classes
differ between the two rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900  # one run of `signs predict`; a hung one stops the benchmark with a message
VARIANTS = {
    "batched": [],
    "baseline": ["--engine", "torch-fp32", "--batch-size", "1"],
}


def cpu_name() -> str:
    flags, name = set(), platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    native = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "AVX2 only"
    return f"{name}, {os.cpu_count()} cores, {native}"


def run_once(model: str, folder: str, extra: list[str], tree: Path = ROOT) -> tuple[float, dict[str, str]]:
    command = [sys.executable, "-m", "signs_resnet", "predict", "--model", model, "--json", "--no-progress",
               *extra, folder]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNS_")}
    if tree != ROOT:
        environment["PYTHONPATH"] = str(tree / "src")
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=environment, check=False,
                                timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{' '.join(command)} (in {tree}) gave no answer within {TIMEOUT_S} s: hung") from None
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return seconds, {answer["path"]: answer.get("label", "error") for answer in json.loads(result.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors", help="model file (default: %(default)s)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "real" / "hands_crops"),
                        help="folder of photos (default: ../shared/data/real/hands_crops)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant (default: %(default)s)")
    parser.add_argument("--compare-tree", type=Path, metavar="DIR",
                        help="also run `signs predict` of another commit's worktree in DIR, alternated with ours")
    args = parser.parse_args()
    variants = {name: (extra, ROOT) for name, extra in VARIANTS.items()}
    if args.compare_tree:
        del variants["baseline"]
        if not (args.compare_tree / "src" / "signs_resnet").is_dir():
            parser.error(f"--compare-tree {args.compare_tree}: no src/signs_resnet there")
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  cwd=args.compare_tree).stdout.strip() or args.compare_tree.name
        variants[f"tree:{revision}"] = ([], args.compare_tree.resolve())
    batched, baseline_name = list(variants)
    model, folder = str(Path(args.model).resolve()), str(Path(args.data).resolve())
    times: dict[str, list[float]] = {name: [] for name in variants}
    labels: dict[str, dict[str, str]] = {}
    for _ in range(args.runs):
        for name, (extra, tree) in variants.items():
            seconds, labels[name] = run_once(model, folder, extra, tree)
            times[name].append(seconds)
    photos = len(labels[batched])
    differ = sum(labels[batched][path] != labels[baseline_name].get(path) for path in labels[batched])
    print(f"{cpu_name()}; {photos} photos in {args.data}; median of {args.runs} runs, whole process")
    baseline = statistics.median(times[baseline_name])
    for name, runs in times.items():
        median = statistics.median(runs)
        right = sum(label == Path(path).parent.name for path, label in labels[name].items()) / photos
        print(f"{name:<14} {median:7.2f} s  {photos / median:7.1f} photos/s  {baseline / median:5.2f}x  "
              f"{right:6.1%} right  (runs: {', '.join(f'{t:.2f}' for t in runs)})")
    print(f"classes that differ between the two: {differ} of {photos}")


if __name__ == "__main__":
    main()
