"""The `signs` command: subcommands over the package's functions, nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from . import data
from .train import TrainConfig

log = logging.getLogger("signs_resnet")


def _train(args: argparse.Namespace) -> int:
    from .train import fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    summary = fit(config)
    if "test" in summary:
        test = summary["test"]
        print(f"test accuracy: {test['accuracy']:.4f} ({test['n'] - len(test['errors'])}/{test['n']}) "
              f"on {test['source']}")
    print(f"model: {summary['model']} (sha256 {summary['checksum'][:12]}), {summary['train_seconds']:.1f} s")
    return 0


def _test_split(path: str | None, classes: list[str]) -> data.Dataset:
    splits = data.load_splits(path, classes=classes)
    if splits.test is None:
        raise ValueError(f"{path or data.default_data_path()}: holds no test split")
    return splits.test


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, plot_confusion, plot_curves
    from .predict import load_model

    model = load_model(args.model)
    dataset = _test_split(args.data, model.classes)
    result = evaluate(model.network, dataset, float(model.metadata.get("temperature", 1.0)))
    model_dir = Path(args.model).parent
    plot_confusion(result, model_dir / "confusion.png")
    if model.metadata.get("history"):
        plot_curves(model.metadata["history"], model_dir / "curves.png")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['source']}: accuracy {result['accuracy']:.4f} on {result['n']} images, "
          f"calibration error {result['ece']:.4f}")
    print("class  accuracy")
    for name, accuracy in result["per_class"].items():
        print(f"{name:>5}  {'-' if accuracy is None else f'{accuracy:.3f}'}")
    print("confusion (rows: true, columns: predicted)")
    print("       " + " ".join(f"{c:>4}" for c in result["classes"]))
    for name, row in zip(result["classes"], result["confusion"]):
        print(f"{name:>5}  " + " ".join(f"{v:>4}" for v in row))
    print(f"wrote {model_dir / 'confusion.png'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .predict import load_model, predict

    model = load_model(args.model)
    results, failed = [], 0
    for path in tqdm(args.images, disable=args.json or len(args.images) < 20, unit="image"):
        try:
            image = data.prepare_image(path, model.image_size)
        except (ValueError, FileNotFoundError) as error:
            results.append({"path": path, "error": str(error)})
            failed += 1
            continue
        probabilities = predict(model, image.unsqueeze(0))[0]
        best = int(torch.argmax(probabilities))
        results.append({
            "path": path,
            "label": model.classes[best],
            "probability": round(float(probabilities[best]), 6),
            "probabilities": {c: round(float(p), 6) for c, p in zip(model.classes, probabilities)},
        })
    if args.json:
        print(json.dumps(results))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['path']}: error: {result['error']}")
            else:
                print(f"{result['path']}: {result['label']} ({result['probability']:.1%})")
    return 1 if failed else 0


def _import_keras(args: argparse.Namespace) -> int:
    from .keras_import import import_keras
    from .train import MODEL_FILE

    path = Path(args.out) / MODEL_FILE
    checksum = import_keras(args.file, path)
    print(f"model: {path} (sha256 {checksum[:12]}), imported from {args.file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signs", description="ResNet50 hand-sign classifier for SIGNS")
    commands = parser.add_subparsers(dest="command", required=True)

    defaults = TrainConfig()
    train = commands.add_parser("train", help="train a model and write DIR/model.safetensors")
    train.add_argument("--data", help="SIGNS data: folder, HDF5 file or image folder (default: $SIGNS_DATA)")
    train.add_argument("--out", default=defaults.out, help="output folder (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=defaults.epochs)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--precision", choices=["bf16", "fp32"], default=defaults.precision)
    train.add_argument("--no-augment", dest="augment", action="store_false", help="train on the photos as they are")
    train.add_argument("--hold-out-validation", action="store_true",
                       help="train on train_signs only and report val_signs accuracy every epoch")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (logs, CI)")
    train.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.safetensors")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", help="test data (default: the official test_signs.h5 under $SIGNS_DATA)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("--model", required=True)
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(run=_predict)

    import_keras = commands.add_parser("import-keras", help="convert a model saved by the original Keras code "
                                       "(model.save('res.h5') or save_weights) into DIR/model.safetensors")
    import_keras.add_argument("file", metavar="FILE.h5")
    import_keras.add_argument("--out", required=True, metavar="DIR", help="output folder")
    import_keras.set_defaults(run=_import_keras)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"signs {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"signs {args.command}: interrupted", file=sys.stderr)
        return 130
