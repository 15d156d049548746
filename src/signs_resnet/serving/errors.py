"""The API's error answers: one JSON shape for every refusal, wherever in the stack it happens.

    {"success": false, "error": {"code": "payload_too_large", "message": "..."}}

Under /v2 (the Open Inference Protocol) the protocol's own shape instead: {"error": "..."}.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from signs_resnet.data.decoding import ImageError


class ApiError(Exception):
    """An error the client can act on: answered as {"success": false, "error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class QueueFull(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(503, "overloaded", "the server is at capacity; retry shortly",
                         {"Retry-After": str(retry_after)})


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
              408: "request_timeout", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "invalid_request", 431: "headers_too_large", 503: "unavailable"}


def error_body(code: str, message: str, path: str) -> dict[str, Any]:
    if path.startswith("/v2/"):
        return {"error": message}
    return {"success": False, "error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, path: str, headers: dict[str, str] | None = None):
    """Our error body; under /v2 the Open Inference Protocol's {"error": message} instead."""
    return JSONResponse(error_body(code, message, path), status, headers=headers)


def raw_error_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer that closes the connection, for refusals made before any request
    object exists (while the request's headers are still arriving)."""
    body = json.dumps(error_body(code, message, "")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode() + body


def decode_error(index: int, name: str | None, error: ImageError) -> ApiError:
    """The API error for image `index` of a request (named `name`, when it has one) that did not decode."""
    label = f"image {index + 1}" + (f" ({name})" if name else "")
    reason = str(error).split(": ", 1)[-1]
    status = 413 if error.code == "too_many_pixels" else 400
    return ApiError(status, error.code, f"{label}: {reason}")
