"""The batched forward pass: `forward_batch` on a batch, and the `Batcher` that groups concurrent requests.

One inference thread runs the engine; the Batcher feeds it, grouping the images of concurrent requests
into one forward pass (up to `max_batch_size`, waiting at most `max_wait_ms` for images still being
decoded) and answering each request with its own rows. Its queue is bounded: when `max_queue` images
already wait, requests are refused (QueueFull: 503 with Retry-After) instead of joining a backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from signs_resnet.inference.engines import Engine
from signs_resnet.serving.errors import QueueFull
from signs_resnet.serving.metrics import Metrics


def forward_batch(engine: Engine, images: torch.Tensor | list[torch.Tensor]) -> list[list[float]]:
    """Class probabilities (N rows of one per class) for prepared images N x 3 x H x W (or a list of such
    tensors, run as one batch): one forward pass. Plain lists: the event loop then formats answers
    without touching a tensor."""
    with torch.inference_mode():
        if isinstance(images, list):
            images = torch.cat(images) if len(images) > 1 else images[0]
        return engine.run(images).tolist()


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
                probabilities = await loop.run_in_executor(self.thread, forward_batch, self.engine, batch)
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
