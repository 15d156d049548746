"""What tracking saves a live stream: the server's time per 640x480 frame at /stream, tracking on and off.

    python benchmarks/stream_tracking.py [--rounds 5] [--per-class 20] [--model runs/default/model.safetensors]

Starts `signs serve` (the default engine) on a free loopback port and sends real webcam frames
(real/hands_frames: the first `per-class` frames of each class, consecutive captures, enlarged to 640x480 and
sent as JPEGs at quality 80, as the web page sends them) one at a time over one stream, the next when the last is
answered, with ?track=1 then ?track=0, alternating round by round so that both see the same machine. Prints each
round's median `server_ms` (arrival to answer, on the server) and the share of frames whose hand was tracked,
then the medians over rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from predict_files import cpu_name  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SIZE = (640, 480)


def frames(per_class: int) -> list[bytes]:
    sent = []
    for folder in sorted((SHARED / "real" / "hands_frames").iterdir()):
        for path in sorted(folder.glob("*.jpg"))[:per_class]:
            buffer = io.BytesIO()
            Image.open(path).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=80)
            sent.append(buffer.getvalue())
    return sent


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SIGNS_")}
    environment["PYTHONPATH"] = str(ROOT / "src")
    process = subprocess.Popen([sys.executable, "-m", "signs_resnet", "serve", "--model", str(model), "--port",
                                str(port)], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise SystemExit("the server was not ready after 180 s")


def one_round(url: str, photos: list[bytes], track: bool) -> tuple[float, float]:
    """The median server_ms over the frames, and the share of them whose hand was tracked."""
    times, tracked = [], 0
    with connect(url.replace("http://", "ws://") + f"/stream?track={int(track)}", max_size=None) as stream:
        for photo in photos:
            stream.send(photo)
            answer = json.loads(stream.recv(60))
            times.append(answer["server_ms"])
            tracked += answer["tracked"]
    return statistics.median(times), tracked / len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "default" / "model.safetensors")
    args = parser.parse_args()
    photos = frames(args.per_class)
    process, url = start_server(args.model)
    try:
        one_round(url, photos[:10], True)  # the first frames pay for lazily built parts
        medians = {True: [], False: []}
        print(f"{cpu_name()}; {len(photos)} frames of 640x480 per round, one at a time over one stream")
        for round_number in range(args.rounds):
            for track in (True, False):
                median, share = one_round(url, photos, track)
                medians[track].append(median)
                print(f"round {round_number + 1} track={int(track)}: median {median:.2f} ms, tracked {share:.0%}")
        for track in (True, False):
            print(f"track={int(track)}: median over rounds {statistics.median(medians[track]):.2f} ms "
                  f"(rounds {', '.join(f'{m:.2f}' for m in medians[track])})")
    finally:
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
