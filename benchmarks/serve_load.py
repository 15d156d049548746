"""Load test: our server against the original's design, over HTTP on 127.0.0.1, and our server over gRPC, with
a 64x64 SIGNS photo and real photos.

    .venv/bin/python benchmarks/serve_load.py --model runs/default/model.safetensors      # or: make bench

(about 9 minutes on two cores: 4 photos x 3 runs x 10 levels of 3 + 1 s). Options: `--photos frame,sample`
(by name: signs, frame, crop, sample), `--image FILE` (a photo of your own), `--runs`, `--seconds`, `--concurrency`.

Starts two real servers as subprocesses on free loopback ports:
  ours      `python -m signs_resnet serve` (FastAPI on uvicorn, batching, the configured engine)
  baseline  the original's design rebuilt: Flask's server handling one request at a time
            (threaded=False), the same model in eager PyTorch fp32, one forward pass per request
            (with the correct /255 preprocessing, so both give the same answers)
and drives each with a closed-loop load generator: `concurrency` connections, each posting the
original's request (multipart field `image`) as soon as its previous answer came back. The photos:
  signs     the first 64x64 SIGNS test photo, the original's request: the network's input, no hand search
  frame     the first 400x300 webcam frame of real/hands_frames/4/
  crop      the first 160x160 webcam crop of real/hands_crops/2/
  sample    samples/sample.jpg, a 1080x1440 phone photo
(the three real photos have their hand found first, which costs most of their time). The generator is raw
asyncio on uvloop with pre-built request bytes (tens of microseconds per request), so on a small machine it
takes little CPU from the servers. Photo by photo and level by level, the servers alternate, and each figure is
the median over `runs` runs.

`--compare-tree FOLDER` adds a row `tree:<short rev>`: the same `signs serve` (with --serve-args) run from
another source tree as `PYTHONPATH=FOLDER/src python -m signs_resnet serve`, measured beside ours in the same run.
An old commit, for instance:

    git worktree add ../old <commit>
    .venv/bin/python benchmarks/serve_load.py --model runs/default/model.safetensors --compare-tree ../old

The gRPC row (`ours-grpc`, levels `--grpc-concurrency`) is the same server started with --grpc-port,
sent the same photo as the Open Inference Protocol's ModelInfer (a BYTES "image" input in
raw_input_contents, as tritonclient sends it) by `concurrency` calls in flight on one grpc.aio channel,
the request serialised once and the answer's bytes not parsed (as the HTTP generator drops its bodies).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "signs" / "64x64_SIGNS" / "test_signs"


# --- the baseline: the original API's design ------------------------------------------------------


def baseline_app(model_path: str):
    """Flask, one request at a time, eager PyTorch fp32: the original API.py with its bugs fixed."""
    import torch
    from flask import Flask, jsonify, request

    from signs_resnet.data.preprocess import prepare_image
    from signs_resnet.inference.forward import predict
    from signs_resnet.model_file import load_model

    app = Flask(__name__)
    model = load_model(model_path)

    @app.route("/predict", methods=["POST"])
    def predict_route():
        result = {"success": False}
        if request.files.get("image"):
            image = prepare_image(io.BytesIO(request.files["image"].read()), model.image_size)
            probabilities = predict(model, image.unsqueeze(0))[0]
            order = torch.argsort(probabilities, descending=True).tolist()
            result["predictions"] = [{"label": model.classes[i], "probability": float(probabilities[i])}
                                     for i in order]
            result["success"] = True
        return jsonify(result)

    @app.route("/readyz")
    def ready():
        return "ok"

    return app


def run_baseline(model_path: str, port: int) -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log: measure the design, not the log
    baseline_app(model_path).run(host="127.0.0.1", port=port, threaded=False)


def run_noop_server(model_path: str, port: int) -> None:
    """Our server with a forward pass that costs nothing: how fast the HTTP side alone can go."""
    import torch
    import uvicorn

    from signs_resnet.inference.engines import Engine
    from signs_resnet.model_file import load_model
    from signs_resnet.serving import app, runner

    def load_noop(settings):
        model = load_model(settings.model)
        return Engine(model, "no-op", "none", lambda images: torch.full((len(images), 6), 1 / 6))

    settings = app.ServeSettings(model=model_path, port=port)
    uvicorn.run(app.create_app(settings, load_noop(settings)), host="127.0.0.1", port=port,
                log_config=runner.LOG_CONFIG,
                access_log=False, loop="uvloop", http="httptools")


# --- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model: str, port: int, *options: str) -> list[str]:
    """Our server: `signs serve` with `options`."""
    return [sys.executable, "-m", "signs_resnet", "serve", "--model", model, "--port", str(port), *options]


class ServerFailed(RuntimeError):
    """A server that exited or never became ready; the message ends with its log's last lines."""


def log_tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty)"


def revision(folder: Path) -> str:
    """The short git revision of a source tree, with + when it has uncommitted changes; "" outside git."""
    git = ["git", "-C", str(folder)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changes = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return f"{commit}{'+' if changes.stdout.strip() else ''}" if commit else ""


def tree_server(tree: str, model: str, port: int, *options: str) -> tuple[str, list[str], dict[str, str], Path]:
    """`signs serve` from another source tree (an old commit's git worktree): its row's name (tree:<short rev>,
    + when it has uncommitted changes), command, environment and folder; ValueError when it is not a source tree."""
    folder = Path(tree).resolve()
    if not (folder / "src" / "signs_resnet" / "__init__.py").is_file():
        raise ValueError(f"--compare-tree {tree}: no src/signs_resnet/ in it (a checkout of this project?)")
    env = os.environ | {"PYTHONPATH": str(folder / "src")}  # before the venv's install, editable or not
    where = "import importlib.util as u; print(u.find_spec('signs_resnet').origin)"
    found = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, env=env, cwd=folder)
    found = found.stdout.strip()
    if not found or not Path(found).resolve().is_relative_to(folder):
        raise ValueError(f"--compare-tree {tree}: Python imports signs_resnet from {found or 'nowhere'}, not from it")
    name = f"tree:{revision(folder) or folder.name}"
    model_path = str((ROOT / model).resolve())  # as our server reads it (from ROOT), though it runs from `folder`
    return name, serve_command(model_path, port, *options), env, folder


def start(command: list[str], port: int, log: Path, timeout: float = 180, env: dict[str, str] | None = None,
          cwd: Path = ROOT) -> subprocess.Popen:
    """Start a server and return once its /readyz answers 200; ServerFailed, with its log's tail, if it does not."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{' '.join(command[1:4])} exited with {process.returncode}; the end of {log}:\n"
                               f"{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise ServerFailed(f"{' '.join(command[1:4])} not ready after {timeout:g} s; the end of {log}:\n{log_tail(log)}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- photos ---------------------------------------------------------------------------------------

SHARED = ROOT.parent / "shared" / "data"
# A 64x64 photo is the network's input and skips the hand finder; the others are what real clients send.
PHOTOS = {
    "signs": DEFAULT_IMAGE,  # the first 64x64 SIGNS test photo: the original's request
    "frame": SHARED / "real" / "hands_frames" / "4",  # the first 400x300 webcam frame of class 4
    "crop": SHARED / "real" / "hands_crops" / "2",  # the first 160x160 webcam crop of class 2
    "sample": SHARED / "samples" / "sample.jpg",  # the 1080x1440 phone photo
}


def photo_file(name: str) -> Path:
    """The file the photo `name` stands for: the first .jpg of its folder (sorted by name), or the file itself."""
    if name not in PHOTOS:
        raise KeyError(f"no photo named {name!r}; the photos are {', '.join(PHOTOS)} (or --image FILE)")
    place = PHOTOS[name]
    if place.is_dir():
        files = sorted(place.glob("*.jpg"))
        if not files:
            raise FileNotFoundError(f"photo {name!r}: {place} holds no .jpg file")
        return files[0]
    if not place.is_file():
        raise FileNotFoundError(f"photo {name!r}: {place} does not exist")
    return place


def load_photos(names: str | None, image: str | None) -> dict[str, tuple[Path, bytes]]:
    """{name: (file, its bytes)} of the photos asked for, in that order; --image alone means that file only."""
    wanted = [name.strip() for name in (names or ("" if image else ",".join(PHOTOS))).split(",") if name.strip()]
    photos = {name: photo_file(name) for name in wanted}
    if image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"--image {image}: no such file")
        photos["image"] = Path(image)
    return {name: (path, path.read_bytes()) for name, path in photos.items()}


def photo_description(path: Path, image: bytes) -> str:
    from PIL import Image

    try:
        width, height = Image.open(io.BytesIO(image)).size
    except OSError:
        return f"{path} ({len(image)} bytes, not an image the benchmark can read)"
    return f"{path.name} ({width}x{height}, {len(image)} bytes)"


# --- the load generator ---------------------------------------------------------------------------


def multipart_request(port: int, image: bytes, filename: str) -> bytes:
    boundary = "----signs-load-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: serve_load\r\nAccept: */*\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def percentile(values: list[float], p: float) -> float:
    """The `p`th percentile of sorted `values` (nearest rank); nan when there are none."""
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


@dataclass
class Tally:
    """What the requests of one load run got (those started after the warm-up)."""

    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> answers
    failures: Counter = field(default_factory=Counter)  # no answer: "timeout" or the connection error's name
    retry_after: int = 0  # 503 answers that said when to retry

    def summary(self, seconds: float) -> dict:
        latencies = sorted(self.latencies)
        errors = sum(n for status, n in self.statuses.items() if status != 200) + sum(self.failures.values())
        return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
                **{f"p{p}": percentile(latencies, p) * 1000 for p in (50, 95, 99)}}


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, dict]:
    """One request on an open connection: (status, headers), the body read and dropped."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()
    if status_line.startswith("HTTP/1.0"):
        headers["connection"] = "close"
    return int(status_line.split()[1]), headers


async def one_connection(port: int, request: bytes, stop_at: float, record_from: float, tally: Tally,
                         timeout: float = 60) -> None:
    """A closed loop: post `request` again as soon as the previous answer came back, until `stop_at`."""
    reader = writer = None
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.perf_counter()  # latency from the request's first byte, as for keep-alive
            status, headers = await asyncio.wait_for(exchange(reader, writer, request), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
            if started >= record_from:
                tally.failures["timeout" if isinstance(error, asyncio.TimeoutError) else type(error).__name__] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
            continue
        if started >= record_from:
            tally.latencies.append(time.perf_counter() - started)
            tally.statuses[status] += 1
            tally.retry_after += status == 503 and "retry-after" in headers
        if headers.get("connection", "").lower() == "close":
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def warm_up(port: int, request: bytes, timeout: float = 120) -> int | str:
    """One request, not measured: its status, or why it got none. A server's first real photo loads the hand
    models (seconds)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            status, _ = await asyncio.wait_for(exchange(reader, writer, request), timeout)
        finally:
            writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
        return f"no answer ({type(error).__name__})"
    return status


async def drive(port: int, request: bytes, concurrency: int, seconds: float, warmup: float,
                tally: Tally | None = None, timeout: float = 60) -> dict[str, float]:
    """`concurrency` closed-loop connections for warmup + seconds; the summary of the measured part."""
    tally = tally if tally is not None else Tally()
    started = time.perf_counter()
    record_from, stop_at = started + warmup, started + warmup + seconds
    await asyncio.gather(*(one_connection(port, request, stop_at, record_from, tally, timeout)
                           for _ in range(concurrency)))
    return tally.summary(max(time.perf_counter(), stop_at) - record_from)


# --- report ---------------------------------------------------------------------------------------


def grpc_request(image: bytes) -> bytes:
    """ModelInfer of one image file, serialised: what tritonclient sends for a BYTES input of one element."""
    from tritonclient.grpc import service_pb2 as pb

    from signs_resnet.serving.tensors import join_bytes

    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
    return pb.ModelInferRequest(model_name="signs-resnet50", inputs=[tensor],
                                raw_input_contents=[join_bytes([image])]).SerializeToString()


async def drive_grpc(address: str, request: bytes, concurrency: int, seconds: float, warmup: float,
                     timeout: float = 60) -> dict[str, float]:
    """`concurrency` closed-loop ModelInfer calls in flight for warmup + seconds; the measured part's summary
    (status 200 for OK, else the gRPC code's name)."""
    import grpc

    tally = Tally()
    started = time.perf_counter()
    record_from, stop_at = started + warmup, started + warmup + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out

        async def one_caller() -> None:
            while time.perf_counter() < stop_at:
                begun = time.perf_counter()
                try:
                    await infer(request, timeout=timeout)
                    status = 200
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                if begun >= record_from:
                    tally.latencies.append(time.perf_counter() - begun)
                    tally.statuses[status] += 1

        await asyncio.gather(*(one_caller() for _ in range(concurrency)))
    return tally.summary(max(time.perf_counter(), stop_at) - record_from)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {
        "errors": sum(run["errors"] for run in runs)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors")
    parser.add_argument("--photos", help=f"the photos to post, by name, of {', '.join(PHOTOS)} "
                                         f"(default: all four; with --image, only that file)")
    parser.add_argument("--image", help="a photo file of your own to post too, named `image` in the table")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per level and run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before each level")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--grpc-concurrency", default="1,16",
                        help="levels of the gRPC row; empty: no gRPC row")
    parser.add_argument("--serve-args", default="", help="extra `signs serve` options for our server")
    parser.add_argument("--compare-tree", action="append", default=[], metavar="FOLDER",
                        help="also `signs serve` from this source tree (e.g. an old commit's git worktree), with "
                             "--serve-args, as the row tree:<short rev>; repeatable")
    parser.add_argument("--noop-engine", action="store_true",
                        help="our server with a forward pass that costs nothing: the HTTP side's ceiling")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--noop-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.concurrency.split(",")]
        args.grpc_levels = [int(c) for c in args.grpc_concurrency.split(",") if c] if not args.noop_engine else []
    except ValueError:
        parser.error("--concurrency and --grpc-concurrency take whole numbers separated by commas, e.g. 1,16")
    if args.baseline_server or args.noop_server:
        return args
    try:
        args.photos = load_photos(args.photos, args.image)
    except (KeyError, OSError, ValueError) as error:
        parser.error(error.args[0] if isinstance(error, KeyError) else str(error))
    return args


def measure(args: argparse.Namespace, servers: dict[str, int], grpc_port: int | None) -> dict:
    """Every (server, photo, concurrency) once per run, alternating server by server within each level so that
    all see the same machine; {(server, photo, concurrency): [summary per run]}."""
    rows = {name: args.levels for name in servers} | ({"ours-grpc": args.grpc_levels} if grpc_port else {})
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for name, port in servers.items():
        for photo_name, (path, image) in args.photos.items():
            status = asyncio.run(warm_up(port, multipart_request(port, image, path.name)))
            if status != 200:  # measured all the same: its errors column will say so
                print(f"warning: {name} gave {photo_name} ({path}) HTTP {status}; its log is in "
                      f"{os.environ.get('TMPDIR', '/tmp')}", file=sys.stderr, flush=True)
    for run in range(args.runs):
        for photo_name, (path, image) in args.photos.items():
            for concurrency in sorted({c for levels in rows.values() for c in levels}):
                for name, levels in rows.items():
                    if concurrency not in levels:
                        continue
                    if name == "ours-grpc":
                        result = asyncio.run(drive_grpc(f"127.0.0.1:{grpc_port}", grpc_request(image), concurrency,
                                                        args.seconds, args.warmup))
                    else:
                        request = multipart_request(servers[name], image, path.name)
                        result = asyncio.run(drive(servers[name], request, concurrency, args.seconds, args.warmup))
                    results.setdefault((name, photo_name, concurrency), []).append(result)
                    print(f"  run {run + 1} {name:<12} {photo_name:<7} c={concurrency:<3} {result['rps']:7.1f} req/s  "
                          f"p50 {result['p50']:7.2f} ms  p99 {result['p99']:8.2f} ms  errors {result['errors']}",
                          file=sys.stderr, flush=True)
    return results


def ratio(rps: float, baseline_rps: float) -> str:
    return f"{rps / baseline_rps:.1f}x" if baseline_rps else "n/a"  # a baseline that answered nothing


def print_table(results: dict, photos: dict, levels: list[int]) -> None:
    """One row per photo, server and level (medians over runs), each photo's against the baseline's with it."""
    print(f"\n{'server':<14}{'photo':<8}{'conc.':>6}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}{'vs baseline':>13}")
    servers = list(dict.fromkeys(name for name, _, _ in results))
    for photo in photos:
        for name in servers:
            for (row, row_photo, concurrency), runs in results.items():
                if (row, row_photo) != (name, photo):
                    continue
                m, base = median_of(runs), results.get(("baseline", photo, concurrency))
                vs_baseline = ratio(m["rps"], median_of(base)["rps"]) if base and name != "baseline" else ""
                print(f"{name:<14}{photo:<8}{concurrency:>6}{m['rps']:>9.1f}{m['p50']:>9.2f}{m['p95']:>9.2f}"
                      f"{m['p99']:>9.2f}{m['errors']:>8.0f}{vs_baseline:>13}".rstrip())
    if "baseline" not in servers:
        return
    print()
    for photo in photos:  # each server at its best error-free level: the throughput each design delivers
        peaks = {}
        for name in (n for n in servers if n != "ours-grpc"):
            medians = {c: median_of(results[name, photo, c]) for c in levels}
            peaks[name] = max(((m["rps"], c) for c, m in medians.items() if not m["errors"]),
                              default=(float("nan"), None))
        base_rps, base_c = peaks.pop("baseline")
        others = ", ".join(f"{name} {rps:.1f} req/s (concurrency {c}): {ratio(rps, base_rps)}"
                           for name, (rps, c) in peaks.items())
        print(f"peak throughput, {photo}: {others}; baseline {base_rps:.1f} req/s (concurrency {base_c})")


def main() -> None:
    args = parse_args()
    if args.baseline_server:
        return run_baseline(args.model, args.baseline_server)
    if args.noop_server:
        return run_noop_server(args.model, args.noop_server)

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    ours_port, baseline_port = free_port(), free_port()
    grpc_port = free_port() if args.grpc_levels else None
    ours = serve_command(args.model, ours_port, *args.serve_args.split(),
                         *(["--grpc-port", str(grpc_port)] if grpc_port else []))
    if args.noop_engine:
        ours = [sys.executable, __file__, "--model", args.model, "--noop-server", str(ours_port)]
    try:
        trees = [tree_server(tree, args.model, free_port(), *args.serve_args.split()) for tree in args.compare_tree]
    except ValueError as error:
        sys.exit(f"serve_load: {error}")
    processes: dict[str, subprocess.Popen] = {}
    servers = {"ours": ours_port}
    try:
        processes["ours"] = start(ours, ours_port, logs / "serve_load_ours.log")
        for name, command, env, folder in trees:
            port = int(command[command.index("--port") + 1])
            log = logs / f"serve_load_{name.replace(':', '_')}.log"
            processes[name], servers[name] = start(command, port, log, env=env, cwd=folder), port
        if not args.skip_baseline:
            processes["baseline"] = start(
                [sys.executable, __file__, "--model", args.model, "--baseline-server", str(baseline_port)],
                baseline_port, logs / "serve_load_baseline.log")
            servers["baseline"] = baseline_port
    except BaseException as error:  # Ctrl-C while a later server starts too: none is left running
        for process in processes.values():
            stop(process)
        if isinstance(error, ServerFailed):
            sys.exit(f"serve_load: {error}")
        raise

    ours_name = "a no-op forward pass" if args.noop_engine else f"signs serve {args.serve_args}".rstrip()
    ours_name += f" at {revision(ROOT) or ROOT}" + "".join(f"; {name}: {folder}" for name, _, _, folder in trees)
    rows = len(args.levels) * len(servers) + len(args.grpc_levels)
    seconds = args.runs * len(args.photos) * rows * (args.seconds + args.warmup)
    duration = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
    print(f"{args.runs} runs x {args.seconds:g} s per level (about {duration}), {os.cpu_count()} CPUs; "
          f"ours: {ours_name}", flush=True)
    for name, (path, image) in args.photos.items():
        print(f"  photo {name:<7} {photo_description(path, image)}", flush=True)
    try:
        results = measure(args, servers, grpc_port)
    finally:
        for process in processes.values():
            stop(process)
    print_table(results, args.photos, args.levels)


if __name__ == "__main__":
    main()
