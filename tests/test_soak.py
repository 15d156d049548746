"""A short soak: benchmarks/soak.py runs the real server under sustained concurrent load, then with a tiny
queue, and reports what every request got; here for a few seconds, with generous bounds."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # a sustained load, then shedding


def test_sustained_load_then_shedding(model_file):
    result = subprocess.run([sys.executable, "benchmarks/soak.py", "--model", str(model_file), "--seconds", "4",
                             "--concurrency", "16", "--warmup", "1", "--shed-seconds", "2", "--json"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])

    sustained = report["sustained"]
    assert sustained["served"] > 50
    assert sustained["statuses"] == {"200": sustained["served"]}  # no 5xx, nor anything else
    assert sustained["failures"] == {}  # every request was answered
    probes = sustained["healthz"]
    assert probes["count"] >= 8 and probes["failures"] == 0  # /healthz answered throughout, every 0.5 s
    assert probes["max_ms"] < 1000
    assert sustained["rss_mb"]["growth"] < 100, sustained["rss_mb"]

    shedding = report["shedding"]
    assert set(shedding["statuses"]) == {"200", "503"}, shedding["statuses"]
    assert shedding["retry_after"] == shedding["statuses"]["503"] > 0  # shed with Retry-After
    assert shedding["failures"] == {}  # not by timing out
    assert shedding["healthz"]["failures"] == 0
