"""Shared fixtures: real SIGNS data, small models, and the real server on a loopback port."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def signs_home(tmp_path_factory) -> Path:
    """One SIGNS_HOME for the whole run, in its temporary folder, seen by every command the tests start
    (command_environment): OpenVINO's conversions cached there are shared by the run's servers and commands and never
    written into the user's cache folder. The installed hand models are linked into it."""
    from signs_resnet.hands.model_files import CACHE_PART, HandModelError, model_paths

    home = tmp_path_factory.mktemp("signs-home")
    (home / CACHE_PART).mkdir()
    try:
        for name, path in model_paths().items():  # where an install has them, looked up before SIGNS_HOME is set
            (home / CACHE_PART / name).symlink_to(path.resolve())
    except HandModelError:
        pass  # not installed: the run sees no hand models, as it would have without SIGNS_HOME
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNS_HOME", str(home))
        yield home


def home_with_hand_models(home: Path, signs_home: Path) -> Path:
    """A new SIGNS_HOME at `home` holding the run's fp32 hand models (signs_home's) alone, linked; the test is
    skipped where they are not installed."""
    from signs_resnet.hands.model_files import CACHE_PART, SHA256

    (home / CACHE_PART).mkdir(parents=True)
    for name in SHA256:
        installed = signs_home / CACHE_PART / name
        if not installed.exists():
            pytest.skip("the hand models are not installed (`signs fetch-hand-models`)")
        (home / CACHE_PART / name).symlink_to(installed.resolve())
    return home


def command_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a command a test starts: none of the caller's SIGNS_ settings but the run's SIGNS_HOME
    (signs_home), then `env`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SIGNS_") or k == "SIGNS_HOME"} | (env or {})


@pytest.fixture(scope="session")
def signs_dir() -> Path:
    return SHARED / "signs"


@pytest.fixture(scope="session")
def sample_jpg() -> Path:
    """The original API's example photo, ../shared/data/samples/sample.jpg: an open hand, class 5."""
    return SHARED / "samples" / "sample.jpg"


def write_h5(path: Path, split: str, images: np.ndarray, labels: np.ndarray, classes=range(6)) -> Path:
    with h5py.File(path, "w") as f:
        f[f"{split}_set_x"] = images
        f[f"{split}_set_y"] = labels
        f["list_classes"] = np.array(list(classes), dtype=np.int64)
    return path


@pytest.fixture(scope="session")
def signs_slice(tmp_path_factory, signs_dir) -> Path:
    """A small folder in the original HDF5 layout: 96 real training photos and 48 test photos."""
    from signs_resnet.data.datasets import load_image_folder

    folder = tmp_path_factory.mktemp("signs_slice")
    train = load_image_folder(signs_dir / "64x64_SIGNS" / "train_signs")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    train_index, test_index = order[:96], order[96:144]
    for split, index in (("train", train_index), ("test", test_index)):
        write_h5(folder / f"{split}_signs.h5", split,
                 train.images[index].permute(0, 2, 3, 1).numpy(), train.labels[index].numpy())
    return folder


@pytest.fixture(scope="session")
def tiny_slice(tmp_path_factory, signs_slice) -> Path:
    """The first 32 training and 16 test photos of signs_slice: for tests of training's mechanics (resuming,
    checkpoints, processes), where a step costs what it costs and the photos' number only adds steps."""
    from signs_resnet.data.datasets import load_hdf5

    folder = tmp_path_factory.mktemp("tiny_slice")
    for split, size in (("train", 32), ("test", 16)):
        dataset = load_hdf5(signs_slice / f"{split}_signs.h5")
        write_h5(folder / f"{split}_signs.h5", split, dataset.images[:size].permute(0, 2, 3, 1).numpy(),
                 dataset.labels[:size].numpy())
    return folder


def random_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def save_jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


@pytest.fixture(scope="session")
def signs_jpegs() -> list[Path]:
    """A few SIGNS test photos (64x64 JPEG), one per class."""
    folder = SHARED / "signs" / "64x64_SIGNS" / "test_signs"
    files = sorted(folder.glob("*.jpg"))
    if not files:
        pytest.skip(f"{folder} holds no photos")
    by_class: dict[str, Path] = {}
    for file in files:
        by_class.setdefault(file.name[0], file)
    return [by_class[c] for c in sorted(by_class)]


def make_model_file(path: Path) -> Path:
    """An untrained ResNet50 written as training/train.py writes models, its batch norms fitted to random images so
    its probabilities are spread out (a model with default statistics answers one class with certainty)."""
    from signs_resnet.data import preprocess
    from signs_resnet.model import ResNet50
    from signs_resnet.model_file import save_model
    from signs_resnet.training.train import recalibrate_batch_norm

    torch.manual_seed(0)
    network = ResNet50((64, 64, 3), 6)
    images = torch.randint(0, 256, (64, 3, 64, 64), dtype=torch.uint8)
    recalibrate_batch_norm(network, images, 64, torch.device("cpu"), "fp32")
    with torch.no_grad():
        network.fc.weight.mul_(0.05)
    metadata = {
        "classes": [str(c) for c in range(6)],
        "input_shape": [64, 64, 3],
        "preprocessing": preprocess.PREPROCESSING,
        "training": {"note": "untrained test model"},
    }
    save_model(path, network, metadata)
    return path


def make_uniform_model_file(path: Path, confidence_threshold: float = 0.5) -> Path:
    """A model file whose network gives every class the same probability, so that its answer is the hand's count
    alone (answer.posterior): "5" for sample.jpg only when its hand was found and read as five fingers (about 0.82
    then, over the threshold), "0" (the first class, not confident) when no hand was found."""
    from signs_resnet.data import preprocess
    from signs_resnet.model import ResNet50
    from signs_resnet.model_file import save_model

    network = ResNet50((64, 64, 3), 6)
    with torch.no_grad():
        network.fc.weight.zero_()
        network.fc.bias.zero_()
    save_model(path, network, {"classes": [str(c) for c in range(6)], "input_shape": [64, 64, 3],
                               "preprocessing": preprocess.PREPROCESSING, "training": {"note": "uniform test model"},
                               "confidence_threshold": confidence_threshold})
    return path


@pytest.fixture(scope="session")
def uniform_model_file(tmp_path_factory) -> Path:
    return make_uniform_model_file(tmp_path_factory.mktemp("uniform") / "model.safetensors")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """SIGNS_TEST_MODEL when set (e.g. a trained runs/default/model.safetensors), else an untrained model."""
    if os.environ.get("SIGNS_TEST_MODEL"):
        return Path(os.environ["SIGNS_TEST_MODEL"]).resolve()
    return make_model_file(tmp_path_factory.mktemp("model") / "model.safetensors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    readiness: list[int] = field(default_factory=list)  # /readyz statuses seen while starting
    grpc_address: str | None = None  # host:port of its gRPC service, when started with grpc=True

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(model: Path, log: Path, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 120, grpc: bool = False) -> Server:
    """`python -m signs_resnet serve` on a free loopback port (and gRPC on another, with `grpc`); returns
    once /readyz answers 200."""
    port = free_port()
    grpc_port = free_port() if grpc else None
    command = [sys.executable, "-m", "signs_resnet", "serve", "--model", str(model), "--port", str(port), *args,
               *(["--grpc-port", str(grpc_port)] if grpc else [])]
    environment = command_environment(env)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=ROOT)
    scheme = "https" if "--ssl-certfile" in args else "http"
    server = Server(process, f"{scheme}://127.0.0.1:{port}", log,
                    grpc_address=f"127.0.0.1:{grpc_port}" if grpc else None)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5, verify=False) as client:  # readiness only: a test checks its own certificate
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
            try:
                status = client.get(f"{server.url}/readyz").status_code
            except httpx.TransportError:
                time.sleep(0.02)
                continue
            server.readiness.append(status)
            if status == 200:
                return server
            time.sleep(0.02)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes
    seconds: float | None  # until the answer began

    def json(self):
        return json.loads(self.body)


def raw_exchange(url: str, payload: bytes, timeout: float = 30) -> RawAnswer:
    """Send raw bytes (any request, however malformed) on a new connection and read one answer."""
    host, port = url.removeprefix("http://").split(":")
    started, seconds, received = time.monotonic(), None, b""
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        try:
            connection.sendall(payload)
        except OSError:  # the server may answer and stop reading before everything is sent
            pass
        try:
            while b"\r\n\r\n" not in received and (chunk := connection.recv(65536)):
                received += chunk
                seconds = seconds or time.monotonic() - started
            head, _, body = received.partition(b"\r\n\r\n")
            if not head:
                return RawAnswer(None, {}, b"", seconds)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
            length = int(headers.get("content-length", -1))
            while (length < 0 or len(body) < length) and (chunk := connection.recv(65536)):
                body += chunk
        except ConnectionResetError:
            return RawAnswer(None, {}, b"", seconds)
    return RawAnswer(int(status_line.split()[1]), headers, body, seconds)


@pytest.fixture(scope="module")
def client(server):
    """An HTTP client of the session's server."""
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def server(model_file, tmp_path_factory):
    """One real server for the whole session, HTTP and gRPC."""
    server = start_server(model_file, tmp_path_factory.mktemp("server") / "server.log", grpc=True)
    yield server
    server.stop()


API_KEY = "test-api-key"


@pytest.fixture(scope="session")
def keyed_server(model_file, tmp_path_factory):
    """A real server, HTTP and gRPC, that wants API_KEY (a quick engine: the tests look at the key)."""
    server = start_server(model_file, tmp_path_factory.mktemp("keyed") / "server.log", "--engine", "torch-fp32",
                          "--max-batch-size", "4", env={"SIGNS_API_KEY": API_KEY}, grpc=True)
    yield server
    server.stop()
