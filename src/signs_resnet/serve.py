"""The HTTP API: the original /predict, done right.

The original's three parts are all here: `load_model` (once, at start-up), `prepare_image` (the very
function training uses, from data.py) and `predict` (the batched forward pass). A request flows:

    upload -> prepare_image (worker thread) -> Batcher queue -> predict on a batch (inference thread)
           -> probabilities, sorted, as JSON

The event loop only parses HTTP and moves bytes: decoding runs in a small thread pool and inference
in one dedicated thread, fed by a `Batcher` that groups concurrent requests into one forward pass
(up to `max_batch_size` images, waiting at most `max_wait_ms` for more) and answers each request
with its own rows. Its queue is bounded: when `max_queue` images already wait, requests get 503
with Retry-After instead of joining an unbounded backlog.

What is refused before any work is done (oversized headers and bodies, slow requests, a missing API
key) is in guards.py; every refusal is a JSON error (errors.py).

Also served: /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI), the web page at /, and the
Open Inference Protocol (KServe v2 REST) under /v2.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import io
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from . import __version__, data
from .data import ImageError, open_image, prepare_image
from .engines import ENGINES, Engine, load_engine, warm_up
from .errors import HTTP_CODES, ApiError, QueueFull, error_response
from .guards import HttpProtocol, LimitBody, RequestTimeout, api_key_check, bearer_token, check_api_key
from .predict import load_model as load_model_file
from .uploads import image_uploads, multipart_boundary

log = logging.getLogger(__name__)


# --- settings -----------------------------------------------------------------------------------


@dataclass
class ServeSettings:
    """Serving settings. Each field can also be set by the environment variable SIGNS_<FIELD>."""

    model: str = "runs/default/model.safetensors"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1  # server processes, each with its own model and batcher
    engine: str = "auto"  # see engines.ENGINES; auto: the fastest measured there is (README, "Inference engine")
    threads: int = 0  # inference threads per process (0: one per core)
    decode_threads: int = 2  # image decoding threads per process
    max_batch_size: int = 32  # images per forward pass
    max_wait_ms: float = 2.0  # how long a batch waits for images that are already being decoded
    max_queue: int = 256  # images waiting for inference; more -> 503 with Retry-After
    max_upload_bytes: int = 10 * 1024 * 1024  # request body limit -> 413
    max_images: int = 64  # images per request
    max_pixels: int = data.MAX_PIXELS  # refuse larger images before decoding them
    request_timeout_s: float = 30.0  # longest wait for a request's headers, and then for its answer
    api_key: str = ""  # when set, the prediction routes need it (X-API-Key or Authorization: Bearer)
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser; empty: no CORS
    model_name: str = "signs-resnet50"  # the name in the Open Inference Protocol paths
    access_log: bool = False
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Defaults, then SIGNS_<FIELD> environment variables, then `overrides` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"SIGNS_{field.name.upper()}")
            if raw is not None:
                values[field.name] = _parse(raw, type(field.default), f"SIGNS_{field.name.upper()}")
        values |= {k: v for k, v in overrides.items() if v is not None}
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        return {f"SIGNS_{k.upper()}": str(v) for k, v in dataclasses.asdict(self).items()}

    def to_log(self) -> str:
        """The settings as JSON for the start-up log, the API key masked."""
        return json.dumps(dataclasses.asdict(self) | {"api_key": "***" if self.api_key else ""})

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name in ("workers", "max_batch_size", "max_queue", "max_upload_bytes", "max_images", "max_pixels",
                     "decode_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.threads < 0:
            raise ValueError("max_wait_ms and threads must not be negative")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be more than 0, got {self.request_timeout_s}")
        if self.api_key and not (self.api_key.isascii() and self.api_key.isprintable() and " " not in self.api_key):
            raise ValueError("api_key must be printable ASCII without spaces (it travels in an HTTP header)")
        for origin in self.cors_origin_list:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"cors_origins: {origin!r} is not an origin like https://example.com (or *)")


def _parse(raw: str, kind: type, name: str) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return raw.lower() in ("1", "true", "yes")
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


# --- response models ----------------------------------------------------------------------------


class Prediction(BaseModel):
    label: str
    probability: float


class ImageResult(BaseModel):
    filename: str | None = None
    label: str = Field(description="the most probable class")
    probability: float
    predictions: list[Prediction] = Field(description="every class, most probable first")
    image: str | None = Field(None, description="with ?include_image=true: the 64x64 model input as a PNG data URL")


class ModelInfo(BaseModel):
    name: str
    checksum: str
    engine: str
    classes: list[str]
    version: str


class Timing(BaseModel):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int = Field(description="images in the forward pass that answered this request")


class PredictResponse(BaseModel):
    success: bool = True
    predictions: list[Prediction] | None = Field(
        None, description="the original's key: every class of the image, most probable first (one image only)")
    results: list[ImageResult] = Field(description="one entry per uploaded image, in upload order")
    model: ModelInfo
    timing: Timing


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    success: bool = False
    error: ErrorDetail


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model: ModelInfo | None = None


# --- the model: load_model, prepare_image (from data.py), predict --------------------------------


def load_model(settings: ServeSettings) -> Engine:
    """Read and verify the model file once, at start-up, and make it ready on the configured engine.
    Raises FileNotFoundError or ValueError naming the file when it is not a usable model."""
    started = time.perf_counter()
    model = load_model_file(settings.model)
    engine = load_engine(model, settings.engine, settings.threads, settings.max_batch_size)
    log.info("loaded %s (sha256 %s, engine %s) in %.1f s", settings.model, model.checksum[:12], engine.describe(),
             time.perf_counter() - started)
    return engine


def predict(engine: Engine, images: torch.Tensor | list[torch.Tensor]) -> list[list[float]]:
    """Class probabilities (N rows of one per class) for prepared images N x 3 x H x W (or a list of such
    tensors, run as one batch): one forward pass. Plain lists: the event loop then formats answers
    without touching a tensor."""
    with torch.inference_mode():
        if isinstance(images, list):
            images = torch.cat(images) if len(images) > 1 else images[0]
        return engine.run(images).tolist()


# --- batching -----------------------------------------------------------------------------------


@dataclass
class _Job:
    images: torch.Tensor
    future: asyncio.Future
    queued_at: float


@dataclass
class BatchResult:
    probabilities: list[list[float]]  # one row per image of the request
    batch_size: int
    queue_seconds: float
    inference_seconds: float


class Batcher:
    """Groups concurrent requests into batches for one inference thread; the queue is bounded."""

    def __init__(self, engine: Engine, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 metrics: Metrics | None = None):
        self.engine = engine
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000, max_queue
        self.metrics = metrics
        self.queued_images = 0
        self.arriving = 0  # images being decoded: worth a short wait when a batch is not full
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._jobs: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        """Answer the jobs already queued, then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
        self.thread.shutdown(wait=True)

    def check_capacity(self, count: int = 1) -> None:
        """Raise QueueFull unless `count` more images fit beside those being decoded or queued (when none
        are, any one request is taken)."""
        pending = self.queued_images + self.arriving
        if pending and pending + count > self.max_queue:
            raise QueueFull(retry_after=1)

    async def submit(self, images: torch.Tensor) -> BatchResult:
        self.check_capacity(len(images))
        future = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(images, future, time.perf_counter()))
        self._count(len(images))
        self._wakeup.set()
        return await future

    async def _next_batch(self) -> list[_Job] | None:
        """The next jobs to run together; None once stopping with nothing left to run."""
        while not self._jobs:
            if self._stopping:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while self.queued_images < self.max_batch_size and self.arriving:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        jobs, count = [], 0
        while self._jobs and (not jobs or count + len(self._jobs[0].images) <= self.max_batch_size):
            job = self._jobs.popleft()
            self._count(-len(job.images))
            if not job.future.done():  # a cancelled request's images are skipped
                jobs.append(job)
                count += len(job.images)
        return jobs

    def _count(self, change: int) -> None:
        self.queued_images += change
        if self.metrics:
            self.metrics.queued.set(self.queued_images)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while (jobs := await self._next_batch()) is not None:
            if not jobs:
                continue
            started = time.perf_counter()
            batch = [job.images for job in jobs]
            try:
                probabilities = await loop.run_in_executor(self.thread, predict, self.engine, batch)
            except Exception as error:  # noqa: BLE001 - handed to every waiting request
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            seconds = time.perf_counter() - started
            if self.metrics:
                self.metrics.observe_batch(len(probabilities), seconds)
            start = 0
            for job in jobs:
                rows = probabilities[start:start + len(job.images)]
                start += len(job.images)
                if not job.future.done():
                    job.future.set_result(BatchResult(rows, len(probabilities), started - job.queued_at, seconds))


# --- metrics ------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics of one server process (all processes, with PROMETHEUS_MULTIPROC_DIR)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("signs_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("signs_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .002, .003, .004, .005, .006, .008, .01, .015, .02, .03, .05, .075,
                                          .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("signs_batch_size", "Images per forward pass", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.inference = Histogram("signs_inference_seconds", "Seconds per forward pass", registry=self.registry,
                                   buckets=(.002, .004, .006, .008, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1))
        self.images = Counter("signs_images", "Images classified", registry=self.registry)
        self.queued = Gauge("signs_queue_images", "Images waiting for inference", registry=self.registry,
                            multiprocess_mode="livesum")
        self.model = Gauge("signs_model_info", "The model being served (value 1)",
                           ["name", "checksum", "engine", "classes", "version"], registry=self.registry,
                           multiprocess_mode="max")

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(size)

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# --- middleware ---------------------------------------------------------------------------------


class Observe:
    """Count and time every request by route template and status; turn unexpected errors into a 500."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def observed_send(message):
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            status = 500
            if not response_started:
                response = error_response(500, "internal_error", "internal server error", scope["path"])
                await response(scope, receive, send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "<unmatched>"
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)


class PlainRoute(Route):
    """A Starlette route that, like FastAPI's, tells the middleware which route it is (scope["route"]),
    so that Observe counts its requests under its path."""

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


# --- the application ----------------------------------------------------------------------------


def _static_page() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


def _sorted_predictions(probabilities: list[float], classes: list[str]) -> list[dict[str, Any]]:
    order = sorted(range(len(classes)), key=probabilities.__getitem__, reverse=True)
    return [{"label": classes[i], "probability": round(probabilities[i], 6)} for i in order]


def _png_data_url(image: torch.Tensor) -> str:
    """The model input (3 x H x W in [0, 1]) back as 8-bit pixels: exactly what the model saw."""
    pixels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_FLAGS = {word: value for value, words in ((True, ("true", "t", "yes", "y", "on", "1")),
                                           (False, ("false", "f", "no", "n", "off", "0"))) for word in words}


def _query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, read as FastAPI reads one (the words of _FLAGS, any case); absent: false."""
    raw = request.query_params.get(name, "false")
    if raw.lower() not in _FLAGS:
        raise ApiError(400, "invalid_request", f"query.{name}: {raw!r} is not a boolean (true or false)")
    return _FLAGS[raw.lower()]


def decode_error(index: int, name: str | None, error: ImageError) -> ApiError:
    label = f"image {index + 1}" + (f" ({name})" if name else "")
    reason = str(error).split(": ", 1)[-1]
    status = 413 if error.code == "too_many_pixels" else 400
    return ApiError(status, error.code, f"{label}: {reason}")


PREDICT_DOCS = {
    "parameters": [{"name": "include_image", "in": "query", "required": False,
                    "schema": {"type": "boolean", "default": False},
                    "description": "also return the 64x64 image the model saw, as a PNG data URL"}],
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "one or more image files (JPEG, PNG, ...), field name `image`"}},
        }}},
    }
}
ERRORS = {status: {"model": ErrorResponse} for status in (400, 408, 413, 415, 503)}


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The FastAPI application serving `engine` (else the model loads at start-up); it warms up in the
    background, and /readyz answers 200 once it has."""
    metrics = Metrics()
    state: dict[str, Any] = {"engine": None, "batcher": None, "ready": False}
    decoder = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        log.info("serving settings %s", settings.to_log())
        loaded = engine or await loop.run_in_executor(None, load_model, settings)
        info = ModelInfo(name=settings.model_name, checksum=loaded.model.checksum, engine=loaded.describe(),
                         classes=loaded.model.classes, version=loaded.model.checksum[:12])
        metrics.model.labels(info.name, info.checksum, info.engine, ",".join(info.classes), info.version).set(1)
        batcher = Batcher(loaded, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, metrics)
        state.update(engine=loaded, batcher=batcher, info=info, info_json=info.model_dump())

        async def warm() -> None:
            try:
                seconds = await loop.run_in_executor(batcher.thread, warm_up, loaded, settings.max_batch_size)
            except Exception:
                log.exception("warm-up failed; the server stays unready")
                return
            batcher.start()
            state["ready"] = True
            log.info("warmed up batch sizes 1..%d in %.1f s; ready", settings.max_batch_size, seconds)

        warming = loop.create_task(warm())
        yield
        warming.cancel()
        await batcher.stop()
        decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="SIGNS hand-sign classifier", version=__version__, lifespan=lifespan,
                  description="ResNet50 on the SIGNS hand signs (digits 0-5). The original `/predict`, plus "
                              "the Open Inference Protocol (KServe v2) under `/v2`.",
                  # our metrics are Prometheus; FastAPI's OpenTelemetry hooks cost time on every request
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})
    # outermost last: Observe sees every answer; CORS headers go on errors too (browsers can read them)
    app.add_middleware(LimitBody, limit=settings.max_upload_bytes)
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_s)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)
    app.add_middleware(Observe, metrics=metrics)
    protected = [Depends(api_key_check(settings.api_key))] if settings.api_key else []
    errors = ERRORS | ({401: {"model": ErrorResponse}} if settings.api_key else {})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(error.status, error.code, error.message, request.url.path, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = HTTP_CODES.get(error.status_code, "error")
        return error_response(error.status_code, code, str(error.detail), request.url.path,
                              getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return error_response(400, "invalid_request", message, request.url.path)

    def ready_batcher() -> Batcher:
        if not state["ready"]:
            raise ApiError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})
        return state["batcher"]

    async def classify(prepare: Callable[[], tuple[torch.Tensor, Any]], count: int,
                       inline: bool = False) -> tuple[Any, BatchResult, float]:
        """Run `prepare` (decoding: images and anything else it returns) in a worker thread, or right here
        when `inline` (small images, see INLINE_DECODE_MAX_PIXELS), then wait for the images' batch.
        Returns (what else prepare returned, the batch result, decoding seconds)."""
        batcher = ready_batcher()
        batcher.check_capacity(count)  # refuse early, before spending time on decoding
        started = time.perf_counter()
        if inline:  # nothing else runs meanwhile, so the batcher need not know these images are coming
            images, extra = prepare()
        else:
            batcher.arriving += count
            try:
                images, extra = await asyncio.get_running_loop().run_in_executor(decoder, prepare)
            finally:
                batcher.arriving -= count
        decode_seconds = time.perf_counter() - started
        return extra, await batcher.submit(images), decode_seconds

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static_page())

    async def predict_route(request: Request) -> JSONResponse:
        """Classify one or more images uploaded as multipart field `image` (the original's curl call).

        With `include_image=true` each result also carries the 64x64 image the model saw, as a PNG.
        """
        started = time.perf_counter()
        if settings.api_key:
            check_api_key(settings.api_key, request.headers.get("x-api-key"),
                          bearer_token(request.headers.get("authorization")))
        include_image = _query_flag(request, "include_image")
        ready_batcher().check_capacity()  # before reading the upload
        boundary = multipart_boundary(request.headers.get("content-type", ""))
        uploads = image_uploads(boundary, await request.body(), settings.max_images)
        engine: Engine = state["engine"]

        opened = []  # headers only: format and size (refused here when over max_pixels)
        for index, (name, blob) in enumerate(uploads):
            try:
                opened.append(open_image(blob, settings.max_pixels))
            except ImageError as error:
                raise decode_error(index, name, error) from None

        def prepare() -> tuple[torch.Tensor, list[str] | None]:
            images = []
            for index, ((name, _), image) in enumerate(zip(uploads, opened)):
                try:
                    images.append(prepare_image(image, engine.model.image_size, settings.max_pixels))
                except ImageError as error:
                    raise decode_error(index, name, error) from None
            return torch.stack(images), [_png_data_url(image) for image in images] if include_image else None

        inline = sum(image.width * image.height for image in opened) <= INLINE_DECODE_MAX_PIXELS
        pngs, result, decode_seconds = await classify(prepare, len(uploads), inline)
        results = []
        for index, (name, _) in enumerate(uploads):
            predictions = _sorted_predictions(result.probabilities[index], engine.model.classes)
            results.append({"filename": name, "label": predictions[0]["label"],
                            "probability": predictions[0]["probability"], "predictions": predictions})
            if pngs:
                results[-1]["image"] = pngs[index]
        body: dict[str, Any] = {"success": True}
        if len(results) == 1:
            body["predictions"] = results[0]["predictions"]
        body |= {
            "results": results,
            "model": state["info_json"],
            "timing": {"decode_ms": round(decode_seconds * 1000, 3), "queue_ms": round(result.queue_seconds * 1000, 3),
                       "inference_ms": round(result.inference_seconds * 1000, 3),
                       "total_ms": round((time.perf_counter() - started) * 1000, 3), "batch_size": result.batch_size},
        }
        return JSONResponse(body)

    # The hot path is a plain Starlette route, first in the list: FastAPI's per-request parameter solving
    # and Starlette's form parsing (see uploads.py) took a fifth of the event loop's time per small upload
    # (benchmarks/serve_load.py --noop-engine: 1,450 requests/s with them, 1,850 without). FastAPI still
    # documents the route, from the same function and PREDICT_DOCS.
    app.router.routes.insert(0, PlainRoute("/predict", predict_route, methods=["POST"]))
    documented = [APIRoute("/predict", predict_route, methods=["POST"], response_model=PredictResponse,
                           response_model_exclude_none=True, openapi_extra=PREDICT_DOCS, responses=errors,
                           dependencies=protected)]

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, str]:
        """Alive: the process answers HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz():
        """Ready: the model is loaded and warmed up (503 before)."""
        if not state["ready"]:
            return JSONResponse({"ready": False}, 503)
        return {"ready": True, "model": state["info"]}

    @app.get("/metrics", response_class=Response)
    async def metrics_route() -> Response:
        """Prometheus metrics."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    from .kserve import add_open_inference_protocol, openapi_schema

    add_open_inference_protocol(app, settings, state, classify, protected)
    app.openapi = lambda: openapi_schema(app, documented)
    return app


# Images this small (all of a request's together) decode in about 0.15 ms per 64x64 JPEG: less than handing
# them to a decoding thread and back costs in thread switches, so they are decoded on the event loop (20%
# more requests/s in benchmarks/serve_load.py). Larger ones go to the decoding threads.
INLINE_DECODE_MAX_PIXELS = 128 * 128


# --- running ------------------------------------------------------------------------------------

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
}


def create_app_from_env() -> FastAPI:
    """The app with settings from SIGNS_* environment variables (uvicorn's factory for --workers > 1)."""
    return create_app(ServeSettings.from_env())


def run(settings: ServeSettings) -> None:
    """Serve until SIGTERM or Ctrl-C. The model is loaded (one process) or verified (several) first, so a
    bad model file stops here with a ValueError naming it, before any port is opened."""
    import uvicorn

    if not Path(settings.model).is_file():
        raise FileNotFoundError(f"{settings.model}: no such model file (train one with `signs train`)")
    # After its graceful shutdown uvicorn raises the signal again with the handler found at start: make
    # SIGTERM's a clean exit (status 0), also while the model is still loading.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    options = dict(host=settings.host, port=settings.port, log_config=LOG_CONFIG, log_level=settings.log_level,
                   access_log=settings.access_log, loop="uvloop",
                   http=functools.partial(HttpProtocol, header_timeout=settings.request_timeout_s),
                   # in-flight requests are answered within request_timeout_s (or timed out): wait that long
                   timeout_graceful_shutdown=settings.request_timeout_s)
    if settings.workers == 1:
        uvicorn.run(create_app(settings, load_model(settings)), **options)
        return
    load_model_file(settings.model)  # the workers load it; verify it once here, where failing is clear
    os.environ.update(settings.to_env())  # the worker processes read their settings from here
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one /metrics over all worker processes
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="signs-metrics-")
    try:
        uvicorn.run("signs_resnet.serve:create_app_from_env", factory=True, workers=settings.workers, **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)
