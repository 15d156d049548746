"""What the server refuses, and when: each guard answers before the work it protects is done.

    HttpProtocol     request headers over MAX_HEADER_BYTES -> 431, headers slower than the timeout -> 408
                     (before any request object exists: uvicorn's httptools parser has neither limit)
    LimitBody        request bodies over max_upload_bytes -> 413 (by Content-Length, else while streaming)
    RequestTimeout   no answer within the timeout -> 408 while the body is still arriving, else 503
    check_api_key    prediction routes without the API key -> 401 (api_key_check: as a FastAPI dependency)
    origin_allowed   WebSockets from other sites' pages (stream.py closes them with 1008, as a missing key)

Every refusal is a JSON error in the shape of errors.py.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from signs_resnet.serving.errors import ApiError, error_response, raw_error_response

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; browsers send a few KiB at most
LINGER_SECONDS = 2.0  # how long a refused connection's remaining input is read and dropped


# --- before the request: headers --------------------------------------------------------------


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a size limit and a deadline on each request's headers, and JSON
    answers to requests that are not HTTP.

    httptools buffers a header of any length, so the size is checked twice: on the bytes received while
    a request's headers are incomplete (one endless header line), and on the parsed headers once they
    are complete (headers that arrived in one read). Pass to uvicorn as
    `http=functools.partial(HttpProtocol, header_timeout=seconds)`.
    """

    def __init__(self, *args, header_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.awaiting_headers = True  # the current request's headers are not complete yet
        self.header_bytes = 0  # bytes received since then (an upper bound on the headers' size)
        self.headers_too_large = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.refused = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:  # the rest of a refused request: dropped
            return
        if self.awaiting_headers:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.awaiting_headers and self.header_bytes > MAX_HEADER_BYTES:
            self._refuse_headers_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self.awaiting_headers, self.header_bytes = False, 0
        self._stop_header_timer()
        if len(self.url) + sum(len(name) + len(value) for name, value in self.headers) > MAX_HEADER_BYTES:
            self.headers_too_large = True
            raise ValueError("headers too large")  # stops the parser, which then calls send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_headers, self.header_bytes = True, 0  # the next request on this connection

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn when the parser fails (and by on_headers_complete's refusal)."""
        if self.headers_too_large:
            self._refuse_headers_too_large()
        else:
            self._refuse(400, "Bad Request", "bad_request", "not a valid HTTP/1.1 request")

    def _refuse_headers_too_large(self) -> None:
        self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                     f"request line and headers over the limit of {MAX_HEADER_BYTES} bytes")

    def _headers_timed_out(self) -> None:
        self._refuse(408, "Request Timeout", "request_timeout",
                     f"the request's headers did not arrive within {self.header_timeout:g} s")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer and close. Closing at once, while the client is still sending, would reset the connection
        and could destroy the answer before it is read: stop writing and drop the input for a moment first."""
        self._stop_header_timer()
        if self.refused or self.transport.is_closing():
            return
        self.refused = True
        log.warning("refused a request from %s: %s", self.client[0] if self.client else "?", message)
        self.transport.write(raw_error_response(status, reason, code, message))
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None


# --- the request body ---------------------------------------------------------------------------


class LimitBody:
    """Refuse request bodies over `limit` bytes: by Content-Length before reading, else while streaming."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, "payload_too_large", f"request body over the limit of {self.limit} "
                                      "bytes", scope["path"], {"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise ApiError(413, "payload_too_large", f"request body over the limit of {self.limit} bytes",
                               {"Connection": "close"})
            return message

        await self.app(scope, limited_receive, send)


# --- the whole request --------------------------------------------------------------------------


class RequestTimeout:
    """Answer a request that is still unanswered after `seconds`, and abandon its work (the task is
    cancelled; the batcher skips the images of cancelled requests): 408 if it was waiting for the client's
    body, else 503 with Retry-After (it waited for decoding or inference: the server is too busy)."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        waiting_for_client = response_started = False

        async def timed_receive():
            nonlocal waiting_for_client
            waiting_for_client = True
            message = await receive()
            waiting_for_client = False  # not reached when cancelled while waiting
            return message

        async def timed_send(message):
            nonlocal response_started
            response_started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, timed_receive, timed_send), self.seconds)
        except asyncio.TimeoutError:
            if response_started:  # too late for an error answer; uvicorn closes the connection
                return
            if waiting_for_client:
                response = error_response(408, "request_timeout", f"the request body did not arrive within "
                                          f"{self.seconds:g} s", scope["path"], {"Connection": "close"})
            else:
                response = error_response(503, "timeout", f"no answer within {self.seconds:g} s: the server is "
                                          "busy; retry shortly", scope["path"], {"Retry-After": "1"})
            await response(scope, receive, send)


# --- who may ask --------------------------------------------------------------------------------


def api_key_check(api_key: str):
    """A FastAPI dependency: 401 unless the request carries `api_key` (see `check_api_key`). (Declared
    through FastAPI's security classes so that /docs offers an Authorize button.)"""

    async def require_api_key(
        header_key: str | None = Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
        bearer: HTTPAuthorizationCredentials | None = Security(HTTPBearer(auto_error=False)),
    ) -> None:
        check_api_key(api_key, header_key, bearer.credentials if bearer else None)

    return require_api_key


def check_api_key(api_key: str, header_key: str | None, bearer: str | None) -> None:
    """Raise ApiError 401 unless `X-API-Key: KEY` or `Authorization: Bearer KEY` carried `api_key`
    (compared in constant time)."""
    supplied = [key for key in (header_key, bearer) if key]
    if any(key_matches(api_key, key) for key in supplied):
        return
    reason = "wrong API key" if supplied else "missing API key"
    raise ApiError(401, "unauthorized", f"{reason}: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                   {"WWW-Authenticate": "Bearer"})


def key_matches(api_key: str, supplied: str) -> bool:
    """Whether `supplied` (a header's text, decoded as latin-1, or a query parameter's, as UTF-8) is `api_key`,
    compared in constant time. The key is printable ASCII (settings.validate), so it has the same bytes in
    either encoding, and any other character makes a wrong key, never an error."""
    return hmac.compare_digest(supplied.encode("utf-8", "surrogatepass"), api_key.encode())


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Whether a browser page at `origin` (its Origin header) may open a WebSocket to this server (reached as
    `host`, its Host header). WebSockets are outside CORS, so this keeps CORS's rule for them: the server's own
    pages and the `cors_origins` list (or "*"); clients that are not browsers send no Origin."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return origin.partition("://")[2] == host


def bearer_token(authorization: str | None) -> str | None:
    """The KEY of an `Authorization: Bearer KEY` header (as FastAPI's HTTPBearer reads it), else None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
