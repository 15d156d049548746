"""Prometheus metrics of the server, and the middleware that counts and times every request."""

from __future__ import annotations

import logging
import os
import time

from signs_resnet.serving.errors import error_response

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (.001, .002, .003, .004, .005, .006, .008, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1, 2.5, 5, 10)


class Metrics:
    """Prometheus metrics of one server process (all processes, with PROMETHEUS_MULTIPROC_DIR)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("signs_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("signs_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.grpc_requests = Counter("signs_grpc_requests", "gRPC calls by method and status code",
                                     ["method", "code"], registry=self.registry)
        self.grpc_latency = Histogram("signs_grpc_request_duration_seconds", "gRPC call latency by method",
                                      ["method"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.batch_size = Histogram("signs_batch_size", "Images per forward pass", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.inference = Histogram("signs_inference_seconds", "Seconds per forward pass", registry=self.registry,
                                   buckets=(.002, .004, .006, .008, .01, .015, .02, .03, .05, .075, .1, .25, .5, 1))
        self.images = Counter("signs_images", "Images classified", registry=self.registry)
        self.queued = Gauge("signs_queue_images", "Images waiting for inference", registry=self.registry,
                            multiprocess_mode="livesum")
        self.streams = Gauge("signs_streams_open", "Live-camera streams open at /stream", registry=self.registry,
                             multiprocess_mode="livesum")
        self.stream_frames = Counter("signs_stream_frames", "Frames received on /stream by outcome: answered, "
                                     "error, dropped (a newer frame replaced it)", ["outcome"], registry=self.registry)
        self.streams_refused = Counter("signs_streams_refused", "Streams refused at /stream by reason: api_key, "
                                       "origin, query (a bad ?track=), limit", ["reason"], registry=self.registry)
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
