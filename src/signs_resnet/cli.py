"""The `signs` command: subcommands over the package's functions, nothing else."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import sys
from pathlib import Path

from signs_resnet.answer import note
from signs_resnet.data import datasets
from signs_resnet.inference.engines import ENGINES
from signs_resnet.model_file import DEFAULT_MODEL, default_model_path
from signs_resnet.serving.settings import ServeSettings
from signs_resnet.training.config import BACKGROUND_SCHEDULES, PRECISIONS, TrainConfig


def _train(args: argparse.Namespace) -> int:
    from signs_resnet.training.train import fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    summary = fit(config)
    if "model" not in summary:  # another process of a torchrun group: rank 0 reports
        return 0
    if "test" in summary:
        test = summary["test"]
        print(f"test accuracy: {test['accuracy']:.4f} ({test['n'] - len(test['errors'])}/{test['n']}) "
              f"on {test['source']}")
    print(f"model: {summary['model']} (sha256 {summary['checksum'][:12]}), {summary['train_seconds']:.1f} s")
    print(f"peak memory: {summary['peak_memory']}")
    return 0


def _model(path: str):
    """The model file `path`, read and verified; a missing one is named with how to get one."""
    from signs_resnet.model_file import load_model

    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such model file (train one with `signs train`, or name one with "
                                "--model or SIGNS_MODEL)")
    return load_model(path)


def _test_split(path: str | None, classes: list[str]) -> datasets.Dataset:
    splits = datasets.load_splits(path, classes=classes)
    if splits.test is None:
        raise ValueError(f"{path or datasets.default_data_path()}: holds no test split")
    return splits.test


def _evaluate(args: argparse.Namespace) -> int:
    from signs_resnet.training.evaluate import evaluate, plot_confusion, plot_curves

    model = _model(args.model)
    folder = datasets.test_folder(args.data)
    if folder is not None:  # photo files: answered as `signs predict` answers them
        from signs_resnet.inference.classify import evaluate_folder
        from signs_resnet.inference.engines import load_engine

        result = evaluate_folder(load_engine(model, args.engine), folder)
    else:  # an HDF5 split (the official test_signs.h5): the network on its 64x64 photos, as they are
        result = evaluate(model.network, _test_split(args.data, model.classes),
                          float(model.metadata.get("temperature", 1.0)))
    if args.json:
        print(json.dumps(result))
    else:
        print(_evaluation_text(result), end="")
    if args.out:  # only where asked, never over the model's own files; after the figures (a missing extra)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot_confusion(result, out / "confusion.png")
        pictures = [out / "confusion.png"]
        if model.metadata.get("history"):
            plot_curves(model.metadata["history"], out / "curves.png")
            pictures.append(out / "curves.png")
        if not args.json:
            print("".join(f"wrote {picture}\n" for picture in pictures), end="")
    return 0


def _evaluation_text(result: dict) -> str:
    """`signs evaluate`'s table: accuracy, calibration, per class, the confusion matrix."""
    lines = [f"{result['source']}: accuracy {result['accuracy']:.4f} on {result['n']} images, "
             f"calibration error {result['ece']:.4f}"]
    if "network" in result:
        lines.append(f"the network alone: accuracy {result['network']['accuracy']:.4f}, calibration error "
                     f"{result['network']['ece']:.4f}; the hand's reading alone: accuracy "
                     f"{result['landmarks_accuracy']:.4f}; hand found in {result['hands_found']:.1%}, confident "
                     f"{result['confident']:.1%}"
                     + (f"; {result['unreadable']} unreadable" if result["unreadable"] else ""))
    lines.append("class  accuracy")
    lines += [f"{name:>5}  {'-' if accuracy is None else f'{accuracy:.3f}'}"
              for name, accuracy in result["per_class"].items()]
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append("       " + " ".join(f"{c:>4}" for c in result["classes"]))
    lines += [f"{name:>5}  " + " ".join(f"{v:>4}" for v in row)
              for name, row in zip(result["classes"], result["confusion"])]
    return "".join(f"{line}\n" for line in lines)


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from signs_resnet.inference.classify import classify_files, find_images

    if args.batch_size < 1 or args.threads < 0:
        raise ValueError("--batch-size must be at least 1 and --threads not negative")
    found = find_images(args.paths)  # once: for the progress bar's total and for classifying
    show_progress = args.progress and sys.stderr.isatty() and len(found) > args.batch_size
    if args.server:
        from signs_resnet.serving.client import RemoteModel, classify_remote

        logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request between the results
        model = RemoteModel(args.server, args.api_key or os.environ.get("SIGNS_API_KEY", ""))
        classes, results = model.classes, classify_remote(model, found, args.batch_size)
    else:
        from signs_resnet.inference.engines import load_engine

        engine = load_engine(_model(args.model), args.engine, args.threads, args.batch_size)
        classes, results = engine.model.classes, classify_files(engine, found, args.batch_size)
    results = list(tqdm(results, total=len(found), unit="image", disable=not show_progress, file=sys.stderr))
    print(format_results(results, classes, "json" if args.json else "csv" if args.csv else "text"), end="")
    return 1 if any("error" in result for result in results) else 0


def format_results(results: list[dict], classes: list[str], style: str) -> str:
    """Prediction results as text (one line each), a JSON list, or CSV with a header line."""
    if style == "json":
        return json.dumps(results) + "\n"
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label", "probability", "confident", *(f"p_{name}" for name in classes), "error"])
        for result in results:
            probabilities = result.get("probabilities", {})
            confident = {True: "yes", False: "no"}.get(result.get("confident"), "")
            writer.writerow([result["path"], result.get("label", ""), result.get("probability", ""), confident,
                             *(probabilities.get(name, "") for name in classes), result.get("error", "")])
        return buffer.getvalue()
    return "".join(f"{r['path']}: error: {r['error'].removeprefix(r['path'] + ': ')}\n" if "error" in r else
                   f"{r['path']}: {r['label']} ({r['probability']:.1%}{'' if r['confident'] else ', not confident'}"
                   f"{note(r['label'], r.get('hand'))})\n"
                   for r in results)


def _serve(args: argparse.Namespace) -> int:
    from signs_resnet.serving.runner import run

    fields = {f.name for f in dataclasses.fields(ServeSettings)}
    run(ServeSettings.from_env(**{k: v for k, v in vars(args).items() if k in fields}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from signs_resnet.inference.export import FORMATS, export

    model = _model(args.model)
    out = args.out or str(Path(args.model).with_suffix(FORMATS[args.format]))
    result = export(model, out, args.format, data_path=args.data)
    difference = result["difference"]
    if args.format == "onnx-int8":
        clear = difference["clear_images"]
        same = (f"same class for {difference['agreement']:.1%} of the {clear} the fp32 model is clear about"
                if clear else "the fp32 model is clear about none of them")
        print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB); int8 vs the fp32 model on training photos "
              f"the calibration did not use: {same}, mean |probability difference| "
              f"{difference['mean_difference']:.1e} (max {difference['max_difference']:.1e})")
        return 0
    print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB); ONNX Runtime vs PyTorch on random images: "
          f"max |probability difference| {difference['probabilities']:.1e}, "
          f"max |logit difference| / max |logit| {difference['logits']:.1e}")
    return 0


def _fetch_hand_models(args: argparse.Namespace) -> int:
    from signs_resnet.hands.model_files import fetch_hand_models

    for path in fetch_hand_models():
        print(f"{path}: MediaPipe's, SHA-256 checked")
    return 0


def _quantize_hand_models(args: argparse.Namespace) -> int:
    from signs_resnet.hands import quantize

    if not args.force and quantize.already_made():
        print(f"{quantize.int8_folder()}: the int8 landmark model is there, SHA-256 checked (--force makes it again)")
        return 0
    if args.photos is not None and args.photos < 1:
        raise ValueError(f"--photos must be at least 1, got {args.photos}")
    try:  # SIGNS' training photos, never real/; without them exit 3, and `make run` goes on in fp32 (Makefile)
        images, source = datasets.training_images(args.data)
    except (OSError, ValueError) as error:
        print(f"signs {args.command}: no SIGNS training photos ({error}); the hand models stay fp32", file=sys.stderr)
        return 3
    photos = images.numpy()[:args.photos]
    print(f"calibrating on {len(photos)} SIGNS training photos from {source} (about a minute for 1080 on two cores)")
    quantize.quantize_hand_models(photos, str(source))
    print(f"wrote {quantize.int8_folder()}: the int8 landmark model and its manifest, used from the next start")
    return 0


def _import_keras(args: argparse.Namespace) -> int:
    from signs_resnet.keras_import import import_keras
    from signs_resnet.training.config import MODEL_FILE

    path = Path(args.out) / MODEL_FILE
    checksum = import_keras(args.file, path)
    print(f"model: {path} (sha256 {checksum[:12]}), imported from {args.file}")
    return 0


MODEL_HELP = f"model file (default: $SIGNS_MODEL, else {DEFAULT_MODEL})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signs", description="ResNet50 hand-sign classifier for SIGNS")
    commands = parser.add_subparsers(dest="command", required=True)

    defaults = TrainConfig()
    train = commands.add_parser("train", help="train a model and write DIR/model.safetensors")
    train.add_argument("--data", help="SIGNS data: a folder (train_signs.h5/test_signs.h5 or image folders), an "
                                      "HDF5 file or an image folder (default: $SIGNS_DATA, else ../shared/data/signs)")
    train.add_argument("--out", default=defaults.out, metavar="DIR",
                       help="output folder for the model, checkpoint, metrics and plots (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the data (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="images per step over all processes; under torchrun split evenly between them "
                            "(default: %(default)s)")
    train.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                       help="AdamW's peak learning rate, after a linear warm-up, then cosine decay (default: %(default)g)")
    train.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help="AdamW's decoupled weight decay (default: %(default)g)")
    train.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="cross-entropy label smoothing (default: %(default)g)")
    train.add_argument("--temperature", type=float, default=defaults.temperature,
                       help="softmax temperature stored with the model; fitted on val_signs instead with "
                            "--hold-out-validation (default: %(default)g)")
    train.add_argument("--confidence-threshold", type=float, default=defaults.confidence_threshold,
                       help="answers are marked confident only when their top probability is at least this "
                            "(and a hand was found showing their count; docs/accuracy.md) (default: %(default)g)")
    train.add_argument("--network-weight", type=float, default=defaults.network_weight,
                       help="the weight of the network's log-probabilities in an answer (docs/robustness.md) "
                            "(default: %(default)g)")
    train.add_argument("--landmark-weight", type=float, default=defaults.landmark_weight,
                       help="the weight of the hand's reading's log-probabilities in an answer (default: %(default)g)")
    train.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed of the initial weights, batch order and augmentation (default: %(default)s)")
    train.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                       help="auto: bf16 on GPUs and on CPUs with AMX or AVX512-BF16, else fp32 (default: %(default)s)")
    train.add_argument("--background-probability", type=float, default=defaults.background_probability,
                       help="share of each batch whose hands are composited onto procedural backgrounds "
                            "(docs/robustness.md) (default: %(default)g)")
    train.add_argument("--background-schedule", choices=BACKGROUND_SCHEDULES, default=defaults.background_schedule,
                       help="constant: that share all through; linear: falling to 0 by the last step "
                            "(default: %(default)s)")
    train.add_argument("--thumbless-probability", type=float, default=defaults.thumbless_probability,
                       help="share of the 4s in each batch swapped for a 5 with the thumb painted out; an "
                            "augmentation, so not with --no-augment (docs/robustness.md) "
                            "(default: %(default)g)")
    train.add_argument("--no-augment", dest="augment", action="store_false",
                       help="train on the photos as they are (default: augmented)")
    train.add_argument("--hold-out-validation", action="store_true",
                       help="train on train_signs only and report val_signs accuracy every epoch "
                            "(default: train on all 1080 photos)")
    train.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar, for logs and CI (default: a bar on a terminal)")
    train.add_argument("--resume", action="store_true",
                       help="continue from DIR/checkpoint.safetensors (default: start afresh)")
    train.add_argument("--checkpoint-every-s", type=float, default=defaults.checkpoint_every_s,
                       help="write a checkpoint after the first epoch that ends this many seconds after the "
                            "previous one; 0: after every epoch (default: %(default)g)")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class accuracy, calibration and confusion matrix")
    evaluate.add_argument("--model", default=default_model_path(), help=MODEL_HELP)
    evaluate.add_argument("--data", help="test data: an HDF5 file (the network on its photos as they are), or a "
                                         "folder of photos in class subfolders, answered as `signs predict` "
                                         "answers them, the network alone beside (default: the official "
                                         "test_signs.h5 under $SIGNS_DATA)")
    evaluate.add_argument("--out", metavar="DIR", help="also draw confusion.png (and the training curves, "
                                                       "curves.png) into DIR (default: no pictures)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")
    evaluate.add_argument("--engine", choices=ENGINES, default="auto",
                          help="inference engine for a folder of photos, as `signs predict --engine` "
                               "(default: %(default)s)")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="classify image files and folders (recursively)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders to search for images")
    predict.add_argument("--model", default=default_model_path(), help=MODEL_HELP)
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list (default: one line per image)")
    output.add_argument("--csv", action="store_true", help="print CSV with a header line (default: one line per image)")
    predict.add_argument("--engine", choices=ENGINES, default="auto",
                         help="inference engine, as the server's --engine (default: %(default)s; torch-fp32 starts seconds "
                              "sooner, for a few photos)")
    predict.add_argument("--server", metavar="URL", help="classify on a running `signs serve` at URL, e.g. "
                                                         "http://host:5000, in requests of at most the server's "
                                                         "max_images (default: none, classify here)")
    predict.add_argument("--api-key", help="the server's API key, with --server (default: $SIGNS_API_KEY)")
    predict.add_argument("--batch-size", type=int, default=64,
                         help="images per forward pass, or per request with --server (default: %(default)s)")
    predict.add_argument("--threads", type=int, default=0,
                         help="inference threads; 0: one per core (default: %(default)s)")
    predict.add_argument("--no-progress", dest="progress", action="store_false",
                         help="no progress bar (default: a bar on a terminal for more than one batch)")
    predict.set_defaults(run=_predict)

    serve_defaults = ServeSettings()
    serve = commands.add_parser("serve", help="serve the model over HTTP (REST API, web page, KServe v2)",
                                description="Every option can also be set as an environment variable "
                                            "SIGNS_<OPTION> (e.g. SIGNS_MODEL, SIGNS_PORT); options win.")
    serve.add_argument("--model", help=MODEL_HELP)
    serve.add_argument("--host", help=f"address to listen on (default: {serve_defaults.host})")
    serve.add_argument("--port", type=int, help=f"port to listen on (default: {serve_defaults.port})")
    serve.add_argument("--grpc-port", type=int, help="also serve the Open Inference Protocol over gRPC on this "
                                                     "port (default: none, no gRPC)")
    serve.add_argument("--workers", type=int, help=f"server processes (default: {serve_defaults.workers})")
    serve.add_argument("--engine", choices=ENGINES, help=f"inference engine (default: {serve_defaults.engine})")
    serve.add_argument("--threads", type=int, help="inference threads per process (default: one per core)")
    serve.add_argument("--decode-threads", type=int,
                       help="image decoding threads per process (default: two per core, at most 16)")
    serve.add_argument("--max-batch-size", type=int,
                       help=f"images per forward pass (default: {serve_defaults.max_batch_size})")
    serve.add_argument("--max-wait-ms", type=float,
                       help=f"longest wait for a fuller batch (default: {serve_defaults.max_wait_ms})")
    serve.add_argument("--max-queue", type=int,
                       help=f"images waiting before 503 (default: {serve_defaults.max_queue})")
    serve.add_argument("--max-upload-bytes", type=int,
                       help=f"request body limit (default: {serve_defaults.max_upload_bytes})")
    serve.add_argument("--max-images", type=int, help=f"images per request (default: {serve_defaults.max_images})")
    serve.add_argument("--max-pixels", type=int,
                       help=f"refuse larger images before decoding (default: {serve_defaults.max_pixels})")
    serve.add_argument("--max-streams", type=int, help="live-camera streams open at once at /stream; more are "
                                                       f"refused (default: {serve_defaults.max_streams})")
    serve.add_argument("--request-timeout-s", type=float,
                       help="longest wait for a request's headers, then for its answer: 408 while the body is still "
                            f"arriving, else 503 (default: {serve_defaults.request_timeout_s:g})")
    serve.add_argument("--api-key", help="require this key on /predict and /v2/models/... (X-API-Key or "
                                         "Authorization: Bearer); prefer SIGNS_API_KEY, flags show in `ps` "
                                         "(default: none, open)")
    serve.add_argument("--cors-origins", help="comma-separated origins whose web pages may call the API "
                                              "(default: none, no CORS headers)")
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM), with --ssl-keyfile: a phone's "
                                              "browser gives the live camera only to a secure page (default: HTTP)")
    serve.add_argument("--ssl-keyfile", help="the certificate's private key (PEM), with --ssl-certfile (default: none)")
    serve.add_argument("--model-name", help=f"Open Inference Protocol name (default: {serve_defaults.model_name})")
    serve.add_argument("--access-log", action="store_true", default=None,
                       help="log every request (default: off)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help=f"log level (default: {serve_defaults.log_level})")
    serve.set_defaults(run=_serve)

    export = commands.add_parser("export", help="export the model for other runtimes (ONNX), with a parity check")
    export.add_argument("--model", default=default_model_path(), help=MODEL_HELP)
    export.add_argument("--format", choices=["onnx", "onnx-int8"], default="onnx",
                        help="onnx: the fp32 graph; onnx-int8: int8, calibrated on training photos (for --engine "
                             "openvino-int8) (default: %(default)s)")
    export.add_argument("--data", help="training data for the int8 calibration (default: $SIGNS_DATA)")
    export.add_argument("--out", help="output file (default: the model's path with the format's suffix)")
    export.set_defaults(run=_export)

    import_keras = commands.add_parser("import-keras", help="convert a model saved by the original Keras code "
                                       "(model.save('res.h5') or save_weights) into DIR/model.safetensors")
    import_keras.add_argument("file", metavar="FILE.h5", help="the Keras HDF5 file")
    import_keras.add_argument("--out", required=True, metavar="DIR", help="output folder (required)")
    import_keras.set_defaults(run=_import_keras)

    commands.add_parser("fetch-hand-models", help="download the hand finder's two models (MediaPipe's, from its wheel "
                        "on PyPI) into $SIGNS_HOME/hand-models or the user cache folder, unless they are there "
                        "already; `make` runs it").set_defaults(run=_fetch_hand_models)
    quantize = commands.add_parser("quantize-hand-models", help="make the landmark model's int8 version (OpenVINO's "
                                   "post-training quantization on SIGNS training photos) that the hand finder then "
                                   "uses, unless it is there already; `make run` runs it")
    quantize.add_argument("--data", help="the SIGNS data folder (default: SIGNS_DATA, else ../shared/data/signs)")
    quantize.add_argument("--photos", type=int, help="calibrate on the first N (default: all 1080)")
    quantize.add_argument("--force", action="store_true", help="make it again even when it is there (default: not)")
    quantize.set_defaults(run=_quantize_hand_models)
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
    except KeyboardInterrupt as interrupt:
        print(f"signs {args.command}: interrupted" + (f": {interrupt}" if str(interrupt) else ""), file=sys.stderr)
        return 130
