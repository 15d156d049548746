"""What every route of the server shares: the model on its engine, the batcher, the decoding threads
and readiness, in one typed `Runtime`; and `start_engine`, the original's `load_model` start-up step.

A request's images flow: decode (`Runtime.classify` runs the route's `prepare` in a decoding thread)
-> the Batcher's queue -> one forward pass on a batch (the inference thread) -> the route's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import torch
from fastapi import Depends, Request

from signs_resnet.hands.detector import finder, search_threads
from signs_resnet.hands.model_files import HandModelError
from signs_resnet.inference.engines import Engine, load_engine, warm_up, warm_up_sizes
from signs_resnet.model_file import load_model as load_model_file
from signs_resnet.serving.batching import Batcher, BatchResult
from signs_resnet.serving.errors import ApiError
from signs_resnet.serving.metrics import Metrics
from signs_resnet.serving.schemas import ModelInfo
from signs_resnet.serving.settings import ServeSettings

log = logging.getLogger(__name__)

Extra = TypeVar("Extra")

# Images this small (all of a request's together) decode faster on the event loop than a hand-off to a
# decoding thread and back costs (docs/performance.md, "Decoding on the event loop").
INLINE_DECODE_MAX_PIXELS = 128 * 128


def start_engine(settings: ServeSettings) -> Engine:
    """Read and verify the model file once, at start-up, and make it ready on the configured engine, with
    the hand finder that framing a photo needs (without it the server still starts, for tensors and photos at
    the input size: check_hand_models). Raises FileNotFoundError or ValueError naming the file when it is not
    a usable model."""
    started = time.perf_counter()
    model = load_model_file(settings.model)
    engine = load_engine(model, settings.engine, settings.threads, settings.max_batch_size)
    check_hand_models(model.image_size)
    log.info("loaded %s (sha256 %s, engine %s) in %.1f s", settings.model, model.checksum[:12], engine.describe(),
             time.perf_counter() - started)
    return engine


def check_hand_models(image_size: int) -> bool:
    """Build the hand finder now, before the first photo; when its models cannot be used, say once what the
    server can still do: image tensors and photos at the input size need no hand (larger photos are answered
    503, tensors.prepare_images)."""
    try:
        log.info("hand finder ready; in int8: %s", ", ".join(finder().int8) or "none (fp32)")
        return True
    except HandModelError as error:
        log.warning("%s; photos larger than %dx%d are refused until the hand models are there; image tensors "
                    "(Open Inference Protocol FP32 'input') and %dx%d photos are served", error, image_size,
                    image_size, image_size, image_size)
        return False


@dataclass
class Runtime:
    """The server's state: set up by `start` (in the app's lifespan), read by the routes."""

    settings: ServeSettings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    batcher: Batcher | None = None
    info: ModelInfo | None = None
    info_json: dict[str, Any] | None = None  # `info` as the answers carry it, built once
    ready: bool = False  # loaded and warmed up: the batcher runs
    open_streams: int = 0  # live-camera streams open now at /stream (stream.py), at most settings.max_streams
    decoder: ThreadPoolExecutor = field(init=False)
    _warming: asyncio.Task | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        threads = self.settings.decode_threads or search_threads()
        self.decoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")

    async def start(self, engine: Engine | None = None) -> None:
        """Serve `engine` (else load the model now, off the event loop), then warm up in the background:
        `ready` turns true once every batch size has run once."""
        loop = asyncio.get_running_loop()
        log.info("serving settings %s", self.settings.to_log())
        engine = engine or await loop.run_in_executor(None, start_engine, self.settings)
        info = ModelInfo(name=self.settings.model_name, checksum=engine.model.checksum, engine=engine.describe(),
                         classes=engine.model.classes, version=engine.model.checksum[:12])
        self.metrics.model.labels(info.name, info.checksum, info.engine, ",".join(info.classes), info.version).set(1)
        self.batcher = Batcher(engine, self.settings.max_batch_size, self.settings.max_wait_ms,
                               self.settings.max_queue, self.metrics)
        self.engine, self.info, self.info_json = engine, info, info.model_dump()
        self._warming = loop.create_task(self._warm_up())

    async def _warm_up(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            seconds = await loop.run_in_executor(self.batcher.thread, warm_up, self.engine,
                                                 self.settings.max_batch_size)
        except Exception:
            log.exception("warm-up failed; the server stays unready")
            return
        self.batcher.start()
        self.ready = True
        log.info("warmed up batch sizes %s in %.1f s; ready",
                 ",".join(map(str, warm_up_sizes(self.settings.max_batch_size))), seconds)

    async def stop(self) -> None:
        """Answer the requests already queued, then stop the threads."""
        if self._warming:
            self._warming.cancel()
        if self.batcher:
            await self.batcher.stop()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    def ready_batcher(self) -> Batcher:
        """The batcher, or a 503 while the model is still loading or warming up."""
        if not self.ready:
            raise ApiError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})
        return self.batcher

    def ready_engine(self) -> Engine:
        """The engine once loaded (metadata is there before warm-up ends), else a 503."""
        if self.engine is None:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": "1"})
        return self.engine

    async def classify(self, prepare: Callable[[], tuple[torch.Tensor, Extra]], count: int,
                       inline: bool = False) -> tuple[Extra, BatchResult, float]:
        """Run `prepare` (decoding: images and anything else it returns) in a decoding thread, or right here
        when `inline` (small images, see INLINE_DECODE_MAX_PIXELS), then wait for the images' batch.
        Returns (what else prepare returned, the batch result, decoding seconds)."""
        batcher = self.ready_batcher()
        batcher.check_capacity(count)  # refuse early, before spending time on decoding
        started = time.perf_counter()
        if inline:  # nothing else runs meanwhile, so the batcher need not know these images are coming
            images, extra = prepare()
        else:
            batcher.arriving += count
            try:
                images, extra = await asyncio.get_running_loop().run_in_executor(self.decoder, prepare)
            finally:
                batcher.arriving -= count
        decode_seconds = time.perf_counter() - started
        return extra, await batcher.submit(images), decode_seconds


def runtime_of(request: Request) -> Runtime:
    """The app's Runtime (create_app puts it in app.state)."""
    return request.app.state.runtime


AppRuntime = Annotated[Runtime, Depends(runtime_of)]  # a route's parameter: the app's Runtime
