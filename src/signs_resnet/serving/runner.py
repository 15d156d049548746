"""Running the server: uvicorn with our HTTP protocol, one process or several workers, clean signals."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

from fastapi import FastAPI

from signs_resnet.extras import require
from signs_resnet.serving.app import create_app
from signs_resnet.serving.guards import HttpProtocol
from signs_resnet.serving.runtime import start_engine
from signs_resnet.serving.settings import ServeSettings

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
    if settings.grpc_port:
        require("tritonclient.grpc", "--grpc-port (the Open Inference Protocol over gRPC)")
        _check_port_free(settings.host, settings.grpc_port, "gRPC")
    # After its graceful shutdown uvicorn raises the signal again with the handler found at start: make
    # SIGTERM's a clean exit (status 0), also while the model is still loading.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    options = {"host": settings.host, "port": settings.port, "log_config": LOG_CONFIG,
               "log_level": settings.log_level, "access_log": settings.access_log, "loop": "uvloop",
               "http": functools.partial(HttpProtocol, header_timeout=settings.request_timeout_s),
               # in-flight requests are answered within request_timeout_s (or timed out): wait that long
               "timeout_graceful_shutdown": settings.request_timeout_s,
               # /stream: a frame up to twice max_upload_bytes is read and answered with payload_too_large, so a
               # client just over the limit hears why; a larger message ends the stream (1009, message too big)
               "ws": "websockets-sansio", "ws_max_size": 2 * settings.max_upload_bytes,
               "ws_per_message_deflate": False}  # frames are compressed images: deflating them costs CPU for nothing
    if settings.ssl_certfile:
        options |= {"ssl_certfile": settings.ssl_certfile, "ssl_keyfile": settings.ssl_keyfile}
    if settings.workers == 1:
        uvicorn.run(create_app(settings, start_engine(settings)), **options)
        return
    # The workers build their own engines; building one here first makes a bad model file, engine or missing
    # extra one clear error before any port is opened, and says once whether photos can be read.
    start_engine(settings)
    os.environ.update(settings.to_env())  # the worker processes read their settings from here
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one /metrics over all worker processes
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="signs-metrics-")
    try:
        uvicorn.run("signs_resnet.serving.runner:create_app_from_env", factory=True, workers=settings.workers, **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


def _check_port_free(host: str, port: int, what: str) -> None:
    """OSError naming the address when nothing could listen there: a clear one line before start-up, where
    the server's start-up would fail with a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen for {what} on {host}:{port}: {error.strerror or error}") from None
