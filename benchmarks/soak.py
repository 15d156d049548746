"""Soak test: the real server under sustained concurrent load on 127.0.0.1, then past its queue bound.

    .venv/bin/python benchmarks/soak.py [--model runs/default/model.safetensors] [--seconds 30] [--concurrency 32]

Phase 1 (sustained load): `signs serve` as a subprocess, driven by serve_load.py's closed-loop generator
(`concurrency` connections posting a 64x64 SIGNS JPEG) for `seconds` after a short warm-up, while a probe
asks /healthz on a new connection every 0.5 s (failing after 2 s) and samples the server's RSS.
Prints requests served, answers by status, requests that got no answer, p50/p99 latency, the probes' worst
latency and failures, and the server's RSS before, after the warm-up and at the end.

Phase 2 (shedding): a server with a tiny queue (--max-queue 4) under the same load: past the bound it
must answer 503 with Retry-After at once, never leave a request unanswered (a timeout).

--json prints one JSON object with both phases instead (tests/test_soak.py reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from serve_load import DEFAULT_IMAGE, Tally, drive, free_port, multipart_request, serve_command, start

PROBE_INTERVAL = 0.5
PROBE_TIMEOUT = 2.0
REQUEST_TIMEOUT = 10.0  # a request without an answer after this long counts as a timeout


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def probe_health(port: int, pid: int, stop_at: float, probes: dict) -> None:
    """/healthz every PROBE_INTERVAL seconds on a new connection (as a kubelet does); RSS alongside."""
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), PROBE_TIMEOUT)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), PROBE_TIMEOUT)
            writer.close()
            ok = answer.startswith(b"HTTP/1.1 200")
        except (OSError, asyncio.TimeoutError):
            ok = False
        probes["count"] += 1
        probes["failures"] += not ok
        probes["max_ms"] = max(probes["max_ms"], (time.perf_counter() - started) * 1000)
        probes["max_rss_mb"] = max(probes["max_rss_mb"], rss_mb(pid))
        await asyncio.sleep(max(0.0, started + PROBE_INTERVAL - time.perf_counter()))


async def load_phase(port: int, pid: int, request: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    tally = Tally()
    probes = {"count": 0, "failures": 0, "max_ms": 0.0, "max_rss_mb": 0.0}
    rss = {"before": rss_mb(pid)}

    async def rss_after_warmup() -> None:
        await asyncio.sleep(warmup)
        rss["after_warmup"] = rss_mb(pid)

    stop_at = time.perf_counter() + warmup + seconds
    summary, *_ = await asyncio.gather(drive(port, request, concurrency, seconds, warmup, tally, REQUEST_TIMEOUT),
                                       probe_health(port, pid, stop_at, probes), rss_after_warmup())
    rss["end"] = rss_mb(pid)
    return {"seconds": seconds, "concurrency": concurrency, **summary,
            "statuses": {str(status): n for status, n in sorted(tally.statuses.items())},
            "failures": dict(tally.failures), "retry_after": tally.retry_after,
            "served": tally.statuses[200], "healthz": probes,
            "rss_mb": rss | {"growth": rss["end"] - rss["after_warmup"], "max": probes["max_rss_mb"]}}


def run_phase(model: str, options: list[str], request_for, concurrency: int, seconds: float, warmup: float,
              log: Path) -> dict:
    port = free_port()
    server = start(serve_command(model, port, *options), port, log)
    try:
        return asyncio.run(load_phase(port, server.pid, request_for(port), concurrency, seconds, warmup))
    finally:
        server.terminate()
        server.wait(30)


def report(name: str, phase: dict) -> None:
    rss, probes = phase["rss_mb"], phase["healthz"]
    others = {status: n for status, n in phase["statuses"].items() if status != "200"}
    print(f"{name}: {phase['seconds']:g} s at concurrency {phase['concurrency']}")
    print(f"  requests served (200)   {phase['served']} ({phase['served'] / phase['seconds']:.1f}/s)")
    print(f"  errors by status        {others or 'none'}")
    print(f"  503 with Retry-After    {phase['retry_after']}")
    print(f"  no answer (timeouts...) {phase['failures'] or 'none'}")
    print(f"  latency                 p50 {phase['p50']:.2f} ms, p99 {phase['p99']:.2f} ms")
    print(f"  /healthz probes         {probes['count']}, failures {probes['failures']}, "
          f"max latency {probes['max_ms']:.1f} ms")
    print(f"  server RSS              before {rss['before']:.1f} MB, after warm-up {rss['after_warmup']:.1f} MB, "
          f"end {rss['end']:.1f} MB (max {rss['max']:.1f}); growth after warm-up {rss['growth']:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/default/model.safetensors")
    parser.add_argument("--image", help="the JPEG to post (default: the first 64x64 SIGNS test photo)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time of the sustained-load phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each phase")
    parser.add_argument("--shed-seconds", type=float, default=10.0, help="measured time of the shedding phase")
    parser.add_argument("--shed-queue", type=int, default=4, help="--max-queue of the shedding phase's server")
    parser.add_argument("--serve-args", default="", help="extra `signs serve` options for both phases")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    image_path = Path(args.image) if args.image else sorted(DEFAULT_IMAGE.glob("*.jpg"))[0]
    image = image_path.read_bytes()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    options = args.serve_args.split()

    def request_for(port: int) -> bytes:
        return multipart_request(port, image, image_path.name)

    if not args.json:
        print(f"image {image_path.name} ({len(image)} bytes), {os.cpu_count()} CPUs, model {args.model}", flush=True)
    sustained = run_phase(args.model, options, request_for, args.concurrency, args.seconds, args.warmup,
                          logs / "soak_server.log")
    if not args.json:
        report("sustained load", sustained)
    shedding = run_phase(args.model, [*options, "--max-queue", str(args.shed_queue)], request_for,
                         args.concurrency, args.shed_seconds, args.warmup, logs / "soak_shedding_server.log")
    if args.json:
        print(json.dumps({"sustained": sustained, "shedding": shedding}))
    else:
        report(f"shedding (--max-queue {args.shed_queue})", shedding)


if __name__ == "__main__":
    sys.exit(main())
