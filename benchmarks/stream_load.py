"""Streaming load test: live cameras on /stream, the WebSocket of the real server, on 127.0.0.1.

    .venv/bin/python benchmarks/stream_load.py --model runs/default/model.safetensors      # or: make bench

(about two minutes: 2 levels x 2 ways x 3 runs x (10 + 1) s). Options: `--clients 1,4,8`, `--track on`, `--fps 30`,
`--seconds`, `--runs`, `--serve-args "--engine openvino"`, `--api-key KEY`, `--json`.

Starts `python -m signs_resnet serve` as a subprocess on a free loopback port (as serve_load.py does), then, level
by level, that many WebSocket clients, each a webcam streaming 640x480 JPEG frames: consecutive captures of
real/hands_frames/ (`--frames` of each class, then the next class: a hand held a while, then another number), enlarged
to 640x480 and encoded at the live page's quality; each level with the hand tracked from frame to frame (the
stream's default) and without (`?track=0`: the palm detector on every frame), alternated. Each client sends its next frame when the answer to the previous arrives (a
closed loop, as the live page does), or with `--fps N` one frame every 1/N s whatever the answers (a camera sending
every frame: the server drops the stale ones, which the dropped column counts). Per level, the medians over `--runs` of:
answered frames/s per client (the median client), round-trip and server (`server_ms`) p50/p95 over every answered
frame, the share of frames whose hand was tracked, dropped frames and errors, beside issue 39's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from predict_files import cpu_name
from serve_load import SHARED, ServerFailed, free_port, percentile, serve_command, start, stop

FRAMES = SHARED / "real" / "hands_frames"
FRAME_SIZE = (640, 480)  # what browsers' cameras give by default, and the live page sends at most 640 wide
JPEG_QUALITY = 80  # the live page's canvas.toBlob("image/jpeg", 0.8)
# Issue 39, "real photos served fast": answered frames/s for one client and for each of four, the server's p50.
TARGET_FPS = {1: 20.0, 4: 8.0}
TARGET_SERVER_P50_MS = 8.0


# --- frames ---------------------------------------------------------------------------------------


def camera_frames(folder: Path, per_class: int) -> list[bytes]:
    """640x480 JPEGs made of the photos in `folder`'s class folders: the first `per_class` of each class (consecutive
    captures), one class after another."""
    from PIL import Image

    classes = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
    photos = [sorted(path.glob("*.jpg")) for path in classes]
    photos = [files for files in photos if files]
    if not photos:
        raise FileNotFoundError(f"{folder}: no class folders (0/, 1/, ...) of .jpg photos")
    frames = []
    for path in (path for files in photos for path in files[:per_class]):
        out = io.BytesIO()
        Image.open(path).convert("RGB").resize(FRAME_SIZE, Image.BILINEAR).save(out, "JPEG", quality=JPEG_QUALITY)
        frames.append(out.getvalue())
    return frames


# --- clients --------------------------------------------------------------------------------------


@dataclass
class ClientTally:
    """What one client's frames sent after the warm-up got."""

    sent: int = 0
    round_trips: list[float] = field(default_factory=list)  # ms from sending a frame to its answer, answered frames
    server_ms: list[float] = field(default_factory=list)  # the answers' own server_ms
    tracked: int = 0  # answered frames whose hand was tracked from the frame before
    error_answers: Counter = field(default_factory=Counter)  # frames answered with an error, by its code
    failures: Counter = field(default_factory=Counter)  # "timeout" (no answer in time), or why the stream ended

    @property
    def answered(self) -> int:
        return len(self.round_trips)


def failure_name(error: BaseException) -> str:
    """A short name for a stream that failed: the close code and reason the server gave, else the error's type."""
    from websockets.exceptions import ConnectionClosed

    if isinstance(error, ConnectionClosed) and error.rcvd is not None:
        return f"closed {error.rcvd.code}: {error.rcvd.reason}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def one_client(url: str, frames: list[bytes], fps: float | None, record_from: float, stop_at: float,
                     tally: ClientTally, timeout: float = 30) -> None:
    """One camera: frames in turn until `stop_at`, each the moment the previous is answered (or, with `fps`, at
    the camera's next tick); answers are matched to frames by their number, since dropped frames get none."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    sent_at: dict[int, float] = {}  # frame number -> when it was sent, until its answer comes
    answered = asyncio.Event()  # set on every answer, and when the stream ends
    receiving = True

    async def receive(stream) -> None:
        nonlocal receiving
        try:
            async for message in stream:
                now, answer = time.perf_counter(), json.loads(message)
                begun = sent_at.pop(answer["frame"], None)
                if begun is not None and begun >= record_from:
                    if "error" in answer:
                        tally.error_answers[answer["error"]["code"]] += 1
                    else:
                        tally.round_trips.append((now - begun) * 1000)
                        tally.server_ms.append(answer["server_ms"])
                        tally.tracked += bool(answer.get("tracked"))
                answered.set()
        finally:
            receiving = False
            answered.set()

    async def answer_to(number: int) -> None:
        while number in sent_at and receiving:
            answered.clear()
            await answered.wait()

    try:
        # websockets' default permessage-deflate is kept: browsers negotiate it too
        async with connect(url, open_timeout=timeout, close_timeout=5) as stream:
            receiver = asyncio.create_task(receive(stream))
            number, started = 0, time.perf_counter()
            while time.perf_counter() < stop_at and not receiver.done():
                number += 1
                sent_at[number] = time.perf_counter()
                await stream.send(frames[(number - 1) % len(frames)])
                tally.sent += sent_at[number] >= record_from
                if fps:  # a camera skips the ticks it was too busy for rather than catching up
                    next_tick = started + math.floor((time.perf_counter() - started) * fps + 1) / fps
                    await asyncio.sleep(next_tick - time.perf_counter())
                    continue
                try:
                    await asyncio.wait_for(answer_to(number), timeout)
                except asyncio.TimeoutError:
                    tally.failures["timeout"] += record_from <= sent_at.get(number, 0)
            try:  # the last frame sent is always answered: wait for it
                await asyncio.wait_for(answer_to(number), timeout)
            except asyncio.TimeoutError:
                tally.failures["timeout"] += 1
            if not receiver.done():
                receiver.cancel()
            elif receiver.exception():
                raise receiver.exception()
    except (ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError) as error:
        tally.failures[failure_name(error)] += 1


async def drive_streams(url: str, frames: list[bytes], clients: int, fps: float | None, seconds: float,
                        warmup: float) -> list[ClientTally]:
    """`clients` cameras at once for warmup + seconds; each one's tally of the measured part."""
    tallies = [ClientTally() for _ in range(clients)]
    record_from = time.perf_counter() + warmup
    await asyncio.gather(*(one_client(url, frames[i:] + frames[:i], fps, record_from, record_from + seconds, tally)
                           for i, tally in enumerate(tallies)))  # each camera starts at another frame
    return tallies


def level_summary(tallies: list[ClientTally], seconds: float) -> dict[str, float]:
    round_trips = sorted(ms for tally in tallies for ms in tally.round_trips)
    server_ms = sorted(ms for tally in tallies for ms in tally.server_ms)
    error_answers = sum(sum(tally.error_answers.values()) for tally in tallies)
    return {"fps": statistics.median(tally.answered / seconds for tally in tallies),
            "fps_min": min(tally.answered / seconds for tally in tallies),
            "rtt_p50": percentile(round_trips, 50), "rtt_p95": percentile(round_trips, 95),
            "server_p50": percentile(server_ms, 50), "server_p95": percentile(server_ms, 95),
            "tracked": sum(tally.tracked for tally in tallies) / max(1, sum(tally.answered for tally in tallies)),
            "dropped": sum(tally.sent - tally.answered for tally in tallies) - error_answers,
            "errors": error_answers + sum(sum(tally.failures.values()) for tally in tallies)}


# --- report ---------------------------------------------------------------------------------------


def print_table(medians: dict[tuple[str, int], dict[str, float]], fps: float | None) -> None:
    print(f"\n{'tracking':>8}{'clients':>8}{'frames/s each':>15}{'slowest':>9}{'rtt p50 ms':>12}{'rtt p95 ms':>12}"
          f"{'server p50':>12}{'server p95':>12}{'tracked':>9}{'dropped':>9}{'errors':>8}")
    for (track, clients), m in medians.items():
        print(f"{track:>8}{clients:>8}{m['fps']:>15.1f}{m['fps_min']:>9.1f}{m['rtt_p50']:>12.2f}{m['rtt_p95']:>12.2f}"
              f"{m['server_p50']:>12.2f}{m['server_p95']:>12.2f}{m['tracked']:>9.0%}{m['dropped']:>9.0f}"
              f"{m['errors']:>8.0f}")
    print("\ntargets (issue 39):" + (f" (at --fps {fps:g}, no client can answer more than that)" if fps else ""))
    for (track, clients), m in medians.items():
        way = f"tracking {track}, {clients} client{'s' * (clients > 1)}"
        if clients in TARGET_FPS:
            print(f"  {way}: {m['fps']:.1f} answered frames/s each, target >= {TARGET_FPS[clients]:g}: "
                  f"{'met' if m['fps'] >= TARGET_FPS[clients] else 'NOT met'}")
        if track == "on":  # the server-time target is tracking's
            print(f"  {way}: server time p50 {m['server_p50']:.2f} ms, target <= {TARGET_SERVER_P50_MS:g} ms: "
                  f"{'met' if m['server_p50'] <= TARGET_SERVER_P50_MS else 'NOT met'}")


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors")
    parser.add_argument("--clients", default="1,4", help="levels: how many cameras stream at once")
    parser.add_argument("--track", default="on,off", help="each level with the hand tracked (on), not (off), or both")
    parser.add_argument("--fps", type=float, help="send every 1/FPS s whatever the answers (default: the next "
                                                   "frame when the previous is answered)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per level and run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time before each level")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="consecutive frames of each class in each camera's "
                                                               "sequence")
    parser.add_argument("--frames-dir", type=Path, default=FRAMES, help="class folders of photos to make them of")
    parser.add_argument("--serve-args", default="", help="extra `signs serve` options")
    parser.add_argument("--api-key", help="start the server with this SIGNS_API_KEY; clients send it as ?api_key=")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON: the medians by level")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error("--clients takes whole numbers separated by commas, e.g. 1,4")
    args.ways = args.track.split(",")
    if not args.ways or set(args.ways) - {"on", "off"}:
        parser.error("--track takes on, off or on,off")
    if min(args.levels) < 1 or args.frames < 1 or args.runs < 1 or (args.fps is not None and args.fps <= 0):
        parser.error("--clients, --frames, --runs and --fps must be positive")
    return args


async def first_answers(url: str, frames: list[bytes], timeout: float = 120) -> str | None:
    """Send each frame once, unmeasured (the first loads the hand models): why the server cannot be measured, or
    None when every frame was answered without an error."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    try:
        async with connect(url, open_timeout=timeout, close_timeout=5) as stream:
            for frame in frames:
                await stream.send(frame)
                answer = json.loads(await asyncio.wait_for(stream.recv(), timeout))
                if "error" in answer:
                    return f"a frame was answered with {answer['error']}"
    except (ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError) as error:
        return failure_name(error)
    return None


def main() -> None:
    args = parse_args()
    try:
        frames = camera_frames(args.frames_dir, args.frames)
    except (OSError, ValueError) as error:
        sys.exit(f"stream_load: {error}")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    port = free_port()
    # twice the most cameras: a level's streams may still be closing on the server when the next level opens its own
    command = serve_command(args.model, port, "--max-streams", str(2 * max(args.levels)), *args.serve_args.split())
    env = os.environ | ({"SIGNS_API_KEY": args.api_key} if args.api_key else {})
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "stream_load_server.log"
    try:
        server = start(command, port, log, env=env)
    except ServerFailed as error:
        sys.exit(f"stream_load: {error}")
    url = f"ws://127.0.0.1:{port}/stream" + (f"?api_key={args.api_key}&" if args.api_key else "?")
    mode = f"a frame every 1/{args.fps:g} s" if args.fps else "the next frame when the previous is answered"
    print(f"CPU: {cpu_name()}; {args.runs} runs x {args.seconds:g} s per level; "
          f"{len(frames)} frames of {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG (mean {sum(map(len, frames)) // len(frames)} "
          f"bytes) from {args.frames_dir}; {mode}; signs serve {args.serve_args}".rstrip(), flush=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {(track, clients): [] for clients in args.levels
                                                              for track in args.ways}
    try:
        if problem := asyncio.run(first_answers(url + "track=0", frames)):
            sys.exit(f"stream_load: the server did not answer the frames: {problem}; its log is {log}")
        for run in range(args.runs):
            for track, clients in results:
                tallies = asyncio.run(drive_streams(url + f"track={int(track == 'on')}", frames, clients, args.fps,
                                                    args.seconds, args.warmup))
                result = level_summary(tallies, args.seconds)
                results[track, clients].append(result)
                errors = sum((tally.error_answers + tally.failures for tally in tallies), Counter())
                print(f"  run {run + 1} tracking {track:<3} clients={clients:<3} {result['fps']:6.1f} frames/s each  "
                      f"rtt p50 {result['rtt_p50']:7.2f} ms  server p50 {result['server_p50']:7.2f} ms  dropped "
                      f"{result['dropped']}  errors {dict(errors) or 0}", file=sys.stderr, flush=True)
    finally:
        stop(server)
    medians = {level: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
               | {"errors": sum(run["errors"] for run in runs)} for level, runs in results.items()}
    print_table(medians, args.fps)
    if args.json:
        print(json.dumps({"cpu": cpu_name(), "cpus": os.cpu_count(),
                          "levels": [{"tracking": track, "clients": clients} | m for (track, clients), m in medians.items()]}))


if __name__ == "__main__":
    main()
