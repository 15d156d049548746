"""Serving settings: one dataclass whose defaults are the documented service, read from SIGNS_* variables.

Flags of `signs serve` mirror its fields (cli.py); the resolved settings go to the start-up log.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signs_resnet.data import decoding
from signs_resnet.inference.engines import ENGINES
from signs_resnet.model_file import DEFAULT_MODEL


@dataclass
class ServeSettings:
    """Serving settings. Each field can also be set by the environment variable SIGNS_<FIELD>."""

    model: str = DEFAULT_MODEL
    host: str = "127.0.0.1"
    port: int = 5000
    grpc_port: int = 0  # the Open Inference Protocol over gRPC on this port too; 0: no gRPC
    workers: int = 1  # server processes, each with its own model and batcher
    engine: str = "auto"  # see engines.ENGINES; auto: the fastest measured (docs/performance.md)
    threads: int = 0  # inference threads per process (0: one per core)
    decode_threads: int = 0  # image decoding threads per process (0: hands/detector.search_threads())
    max_batch_size: int = 32  # images per forward pass
    max_wait_ms: float = 2.0  # how long a batch waits for images that are already being decoded
    max_queue: int = 256  # images waiting for inference; more -> 503 with Retry-After
    max_upload_bytes: int = 10 * 1024 * 1024  # request body limit -> 413
    max_images: int = 64  # images per request
    max_pixels: int = decoding.MAX_PIXELS  # refuse larger images before decoding them
    max_streams: int = 8  # live-camera WebSocket streams open at once at /stream, per process; more -> close 1013
    request_timeout_s: float = 30.0  # longest wait for a request's headers, and then for its answer
    api_key: str = ""  # when set, the prediction routes need it (X-API-Key or Authorization: Bearer)
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser; empty: no CORS
    # HTTPS with this certificate and key (PEM), uvicorn's own TLS: browsers give a page the camera only when it
    # is secure, and a phone reaches the server by a LAN address, not localhost (docs/operations.md)
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
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
                     "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0: any free port), got {self.port}")
        if not 0 <= self.grpc_port <= 65535 or (self.grpc_port and self.grpc_port == self.port):
            raise ValueError(f"grpc_port must be a port other than port {self.port} (or 0: no gRPC), "
                             f"got {self.grpc_port}")
        if self.max_wait_ms < 0 or self.threads < 0 or self.decode_threads < 0:
            raise ValueError("max_wait_ms, threads and decode_threads must not be negative")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be more than 0, got {self.request_timeout_s}")
        if self.api_key and not (self.api_key.isascii() and self.api_key.isprintable() and " " not in self.api_key):
            raise ValueError("api_key must be printable ASCII without spaces (it travels in an HTTP header)")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both, or neither for plain HTTP")
        for name in ("ssl_certfile", "ssl_keyfile"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ValueError(f"{name}: {getattr(self, name)}: no such file")
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
