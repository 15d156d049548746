"""A live camera's frames over a WebSocket at /stream: each binary message is one image file, and each frame is
answered with one JSON text message, built by the very path /predict's results take (photos.py):

    {"frame": 3, "label": "5", "probability": ..., "confident": ..., "hand": ..., "predictions": [...],
     "tracked": true, "shown": "5", "server_ms": 11.2}
    {"frame": 4, "error": {"code": "not_an_image", "message": "..."}}      the stream stays open

Each stream keeps its last frame's hand: the next frame's is looked for there first, with the landmark model
alone, as MediaPipe's video mode does (`tracked`), the palm detector running only when it is lost; `?track=0`
turns that off, so that every frame is answered exactly as /predict answers the photo. `shown` is the label to
show, smoothed over frames by smoothing.py's rule.

Two tasks per stream: one receives every message into a one-slot holder (LatestFrame), the other answers the
frame in it. A client that sends faster than its frames are answered never builds a queue: a newer frame
replaces the one waiting, which is dropped unanswered, so at most one frame waits and the next answer is always
to the newest. Refusals close the socket after accepting it, so that browsers, which see neither the HTTP status
of a refused handshake nor headers they could set, get a close code and a reason: 1008 (policy violation) for a
missing or wrong API key or a foreign page, 1013 (try again later) past max_streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.utils import ClientDisconnected

from signs_resnet.serving.errors import ApiError
from signs_resnet.serving.guards import bearer_token, key_matches, origin_allowed
from signs_resnet.serving.photos import classify_framed
from signs_resnet.serving.runtime import Runtime
from signs_resnet.smoothing import ShownAnswer

log = logging.getLogger(__name__)

POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013  # WebSocket close codes (RFC 6455, IANA's registry)
TRACK_VALUES = {"1": True, "true": True, "0": False, "false": False}  # ?track=


@dataclass
class StreamState:
    """What a stream remembers from frame to frame: whether it tracks the hand, the last frame's hand (its
    points; None when it had none) and the shown answer."""

    tracking: bool = True
    hand: tuple[tuple[float, float], ...] | None = None
    shown: ShownAnswer = field(default_factory=ShownAnswer)


@dataclass
class Frame:
    """A message received on a stream."""

    number: int  # in the stream, from 1, in the order received
    data: bytes | None  # the image file; None when refused on arrival (`refusal`)
    refusal: ApiError | None
    received: float  # time.perf_counter() at arrival


class LatestFrame:
    """A one-slot holder: the newest frame not yet taken. Putting one in replaces (drops) a frame still waiting."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._filled = asyncio.Event()

    def put(self, frame: Frame) -> Frame | None:
        """Hold `frame`; returns the frame it replaced, if one was waiting."""
        dropped, self._frame = self._frame, frame
        self._filled.set()
        return dropped

    async def take(self) -> Frame:
        await self._filled.wait()
        self._filled.clear()
        frame, self._frame = self._frame, None
        return frame


async def stream_route(websocket: WebSocket) -> None:
    """/stream: check the key, the page's origin and the number of open streams, then answer frames until the
    client closes (or the server shuts down: uvicorn closes every stream with 1012 first)."""
    runtime: Runtime = websocket.app.state.runtime
    metrics = runtime.metrics
    await websocket.accept()
    refusal = _refusal(websocket, runtime)
    if refusal:
        reason, code, message = refusal
        metrics.streams_refused.labels(reason).inc()
        await websocket.close(code, message)
        return
    runtime.open_streams += 1  # no await since _refusal counted: no other stream can have taken the last place
    metrics.streams.inc()
    try:
        await _serve(websocket, runtime, StreamState(_tracking(websocket)))
    finally:
        runtime.open_streams -= 1
        metrics.streams.dec()


def _refusal(websocket: WebSocket, runtime: Runtime) -> tuple[str, int, str] | None:
    """Why this stream may not open (the metric's reason, the close code, the reason sent), or None. Close
    reasons are short: a close frame holds at most 123 bytes of them."""
    settings = runtime.settings
    if settings.api_key:
        supplied = [key for key in (websocket.query_params.get("api_key"), websocket.headers.get("x-api-key"),
                                    bearer_token(websocket.headers.get("authorization"))) if key]
        if not any(key_matches(settings.api_key, key) for key in supplied):
            return ("api_key", POLICY_VIOLATION,
                    f"{'wrong' if supplied else 'missing'} API key: send it as ?api_key=KEY or an X-API-Key header")
    if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"),
                          settings.cors_origin_list):
        return "origin", POLICY_VIOLATION, "a page from another origin; the server's --cors-origins can allow it"
    if _tracking(websocket) is None:  # the value is not echoed: a close reason holds at most 123 bytes
        return "query", POLICY_VIOLATION, "?track= takes 1 or 0 (true or false)"
    if runtime.open_streams >= settings.max_streams:
        return ("limit", TRY_AGAIN_LATER,
                f"the server has {settings.max_streams} streams open, its limit; retry shortly")
    return None


def _tracking(websocket: WebSocket) -> bool | None:
    """Whether the stream tracks the hand: ?track=, on by default; None for a value it does not take."""
    return TRACK_VALUES.get(websocket.query_params.get("track", "1").lower())


async def _serve(websocket: WebSocket, runtime: Runtime, state: StreamState) -> None:
    """Receive and answer concurrently until the client goes (either task ends: the other is cancelled)."""
    latest = LatestFrame()
    tasks = {asyncio.create_task(_receive(websocket, runtime, latest), name="stream-receive"),
             asyncio.create_task(_answer(websocket, runtime, latest, state), name="stream-answer")}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() and not _client_gone(task.exception()):
            log.error("a stream ended on an unexpected error", exc_info=task.exception())


async def _receive(websocket: WebSocket, runtime: Runtime, latest: LatestFrame) -> None:
    """Number every message and hold it as the newest frame; checks that need no decoding are made here, so
    that the holder never keeps a frame's bytes past the limit."""
    limit = runtime.settings.max_upload_bytes
    number = 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        number += 1
        data, refusal = message.get("bytes"), None
        if data is None:
            refusal = ApiError(400, "not_binary", "send each frame as a binary message holding one image file "
                                                  "(JPEG, PNG, WebP), not as text")
        elif not data:
            refusal = ApiError(400, "empty_file", "the frame is empty")
        elif len(data) > limit:
            refusal = ApiError(413, "payload_too_large", f"a frame of {len(data)} bytes is over the limit of "
                                                         f"{limit} bytes")
        if refusal:
            data = None
        if latest.put(Frame(number, data, refusal, time.perf_counter())):
            runtime.metrics.stream_frames.labels("dropped").inc()


async def _answer(websocket: WebSocket, runtime: Runtime, latest: LatestFrame, state: StreamState) -> None:
    while True:
        frame = await latest.take()
        answer = await frame_answer(runtime, frame, state)
        await websocket.send_text(json.dumps(answer, ensure_ascii=False, separators=(",", ":")))
        runtime.metrics.stream_frames.labels("error" if "error" in answer else "answered").inc()


async def frame_answer(runtime: Runtime, frame: Frame, state: StreamState) -> dict[str, Any]:
    """One frame's answer: /predict's result for the photo (its hand looked for first where the stream's last
    frame had it, when tracking), with its frame number, whether its hand was tracked, the label to show
    (`state.shown`; None: no hand) and the milliseconds from its arrival to its answer (waiting in the holder
    included); or its error, as /predict's code and message (an error leaves the stream's state as it was)."""
    try:
        if frame.refusal:
            raise frame.refusal
        previous = state.hand if state.tracking else None
        [result], [framing], _, _ = await classify_framed(runtime, [(None, frame.data)], previous=[previous])
    except ApiError as error:
        # /predict names the image of its request ("image 1: ..."); here the frame number says which
        message = error.message.removeprefix("image 1: ")
        return {"frame": frame.number, "error": {"code": error.code, "message": message}}
    except Exception:  # noqa: BLE001 - the client gets a generic error, the log the traceback; the stream goes on
        log.exception("unexpected error answering frame %d of a stream", frame.number)
        return {"frame": frame.number, "error": {"code": "internal_error", "message": "internal server error"}}
    state.hand = framing.points  # None when it has no hand: the next frame's is looked for by the palm detector
    # A photo searched without a hand found shows "no hand" (None); the network's guess on it counts no fingers.
    shown = state.shown.update(None if framing.searched and not framing.hand_found else result["label"])
    return ({"frame": frame.number} | result
            | {"tracked": framing.tracked, "shown": shown,
               "server_ms": round((time.perf_counter() - frame.received) * 1000, 3)})


def _client_gone(error: BaseException) -> bool:
    """Whether `error` only says the client left while its answer was being sent."""
    return isinstance(error, (WebSocketDisconnect, ClientDisconnected, OSError))
