"""Reliability and security of the real server (`python -m signs_resnet serve` on a loopback port): a bad
model stops start-up, SIGTERM drains requests in flight, limits on headers and time, API key, CORS."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from conftest import ROOT, free_port, raw_exchange, start_server
from PIL import Image
from safetensors.torch import save_file

from signs_resnet import artifact
from signs_resnet.serving.guards import MAX_HEADER_BYTES

API_KEY = "test-key-0123456789"
ORIGIN = "https://app.example"


def big_png(side: int = 5000) -> bytes:
    """A valid PNG of side x side pixels (under the pixel limit) that takes a while to decode and resize."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 120, 90)).save(buffer, "PNG")
    return buffer.getvalue()


# --- start-up: a model that cannot be served stops it ---------------------------------------------


def bad_model_files(model_file: Path, folder: Path) -> dict[str, Path]:
    blob = model_file.read_bytes()
    files = {"truncated": blob[: len(blob) // 2], "random bytes": os.urandom(4096)}
    for name, contents in files.items():
        (folder / f"{name}.safetensors").write_bytes(contents)
    artifact.save(folder / "checkpoint.safetensors", "checkpoint", {"epoch": 3, "weights": {"w": torch.ones(2)}}, {})
    save_file({"w": torch.ones(2)}, folder / "foreign.safetensors")  # a safetensors file of someone else's
    return {name: folder / f"{name}.safetensors" for name in ("truncated", "random bytes", "checkpoint", "foreign")}


@pytest.mark.slow
@pytest.mark.parametrize("kind, workers", [("truncated", 1), ("random bytes", 1), ("checkpoint", 1),
                                           ("foreign", 1), ("truncated", 2)])
def test_a_bad_model_file_stops_start_up_with_one_line_naming_it(model_file, tmp_path, kind, workers):
    bad = bad_model_files(model_file, tmp_path)[kind]
    port = free_port()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "signs_resnet", "serve", "--model", str(bad), "--port", str(port),
                             "--workers", str(workers)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"signs serve: error: {bad}: "), result.stderr
    with pytest.raises(ConnectionRefusedError):  # no server was started
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- shutdown: SIGTERM answers what is in flight, then exits 0 ----------------------------------------


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_then_exits_0(model_file, tmp_path):
    server = start_server(model_file, tmp_path / "server.log", "--engine", "torch-fp32", "--max-batch-size", "4")
    png = big_png()
    try:
        def post(index: int) -> tuple[int, float]:
            with server.client() as client:
                response = client.post("/predict", files=[("image", (f"{index}-{i}.png", png)) for i in range(4)])
                return response.status_code, time.monotonic()

        with ThreadPoolExecutor(6) as pool:
            answers = [pool.submit(post, i) for i in range(6)]
            time.sleep(0.5)  # sent, and being decoded: 4 images of about 0.3 s each per request, 2 threads
            assert not any(answer.done() for answer in answers)
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            with pytest.raises(ConnectionRefusedError):  # no new connections while draining
                socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=2).close()
            results = [answer.result() for answer in answers]
        assert [status for status, _ in results] == [200] * 6
        assert all(answered > signalled for _, answered in results)  # they were in flight at SIGTERM
        assert server.process.wait(10) == 0
        assert time.monotonic() - max(answered for _, answered in results) < 5
    finally:
        server.stop()


# --- headers: size limit --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 2**20 + b"\r\n",  # one header of 1 MiB
    b"".join(b"X-Header-%d: %s\r\n" % (i, b"b" * 100) for i in range(1000)),  # 1000 headers, 110 KB in all
    b"Cookie: " + b"c" * (MAX_HEADER_BYTES + 1) + b"\r\n",  # just over the limit
])
def test_huge_headers_get_431_and_the_server_keeps_serving(server, headers):
    answer = raw_exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + headers + b"\r\n")
    assert answer.status == 431, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "headers_too_large"
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_huge_url_gets_431(server):
    answer = raw_exchange(server.url, b"GET /healthz?" + b"q" * 2**17 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 431


def test_headers_under_the_limit_are_served(server):
    headers = b"".join(b"X-Header-%d: %s\r\n" % (i, b"b" * 100) for i in range(400))  # 44 KB
    answer = raw_exchange(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert (answer.status, answer.body) == (200, b'{"status":"ok"}')


def test_a_request_that_is_not_http_gets_a_400_json_answer(server):
    answer = raw_exchange(server.url, b"HELLO WORLD\r\n\r\n")
    assert answer.status == 400 and answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "bad_request"


# --- time limits ----------------------------------------------------------------------------------

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def impatient_server(model_file, tmp_path_factory):
    """A server that waits at most TIMEOUT seconds for a request's headers, then for its answer."""
    server = start_server(model_file, tmp_path_factory.mktemp("impatient") / "server.log",
                          "--request-timeout-s", str(TIMEOUT), "--engine", "torch-fp32", "--max-batch-size", "4")
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("payload", [
    b"",  # connects and says nothing
    b"POST /predict HTTP/1.1\r\nHost: x\r\n",  # headers that never end
], ids=["silent", "slow headers"])
def test_slow_headers_get_408_and_the_connection_is_closed(impatient_server, payload):
    answer = raw_exchange(impatient_server.url, payload, timeout=10)
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert answer.json()["error"]["code"] == "request_timeout"
    assert TIMEOUT * 0.9 < answer.seconds < TIMEOUT + 3


def test_a_slow_upload_gets_408(impatient_server):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: 100000\r\n\r\n--xyz\r\n")  # then nothing more
    answer = raw_exchange(impatient_server.url, head, timeout=10)
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert answer.json()["error"]["code"] == "request_timeout"
    assert TIMEOUT * 0.9 < answer.seconds < TIMEOUT + 3


def test_a_request_not_answered_in_time_gets_503_with_retry_after(impatient_server, sample_jpg):
    png = big_png()  # 8 of them take 2-3 s to decode
    with impatient_server.client() as client:
        started = time.monotonic()
        response = client.post("/predict", files=[("image", (f"{i}.png", png)) for i in range(8)])
        seconds = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "timeout"
        assert seconds < TIMEOUT + 2
        assert client.post("/predict", files={"image": ("a.jpg", sample_jpg.read_bytes())}).status_code == 200


def test_requests_in_time_are_served(impatient_server, sample_jpg):
    with impatient_server.client() as client:
        for _ in range(3):
            assert client.post("/predict", files={"image": ("a.jpg", sample_jpg.read_bytes())}).status_code == 200


# --- API key and CORS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_server(model_file, tmp_path_factory):
    """A server with an API key (from the environment) that allows one browser origin."""
    server = start_server(model_file, tmp_path_factory.mktemp("secured") / "server.log", "--cors-origins", ORIGIN,
                          "--engine", "torch-fp32", "--max-batch-size", "4", env={"SIGNS_API_KEY": API_KEY})
    yield server
    server.stop()


def protected_requests(sample: bytes) -> dict[str, tuple[str, str, dict]]:
    infer = {"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.5] * 12288}]}
    return {
        "predict": ("POST", "/predict", {"files": {"image": ("sample.jpg", sample)}}),
        "v2 infer": ("POST", "/v2/models/signs-resnet50/infer", {"json": infer}),
        "v2 model metadata": ("GET", "/v2/models/signs-resnet50", {}),
    }


@pytest.mark.parametrize("route", list(protected_requests(b"")))
@pytest.mark.parametrize("credentials", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                         {"Authorization": f"Basic {API_KEY}"}, {"X-API-Key": API_KEY[:-1]}],
                         ids=["none", "wrong X-API-Key", "wrong bearer", "not bearer", "prefix"])
def test_prediction_routes_refuse_requests_without_the_key(secured_server, sample_jpg, route, credentials):
    method, path, options = protected_requests(sample_jpg.read_bytes())[route]
    with secured_server.client() as client:
        response = client.request(method, path, headers=credentials, **options)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    if path.startswith("/v2/"):
        assert "API key" in body["error"]
    else:
        assert body["success"] is False and body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("route", list(protected_requests(b"")))
@pytest.mark.parametrize("credentials", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}],
                         ids=["X-API-Key", "bearer"])
def test_prediction_routes_answer_with_the_key(secured_server, sample_jpg, route, credentials):
    method, path, options = protected_requests(sample_jpg.read_bytes())[route]
    with secured_server.client() as client:
        assert client.request(method, path, headers=credentials, **options).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready",
                                  "/v2/models/signs-resnet50/ready", "/", "/docs", "/openapi.json"])
def test_probes_and_docs_need_no_key(secured_server, path):
    assert httpx.get(secured_server.url + path, timeout=10).status_code == 200


def test_the_key_is_checked_before_the_upload_is_read(secured_server):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: 5000000\r\n\r\n")  # the 5 MB body never comes
    answer = raw_exchange(secured_server.url, head, timeout=10)
    assert answer.status == 401 and answer.seconds < 5


def test_the_key_is_never_logged(secured_server):
    log = secured_server.log.read_text()
    assert '"api_key": "***"' in log  # the settings line, masked
    assert API_KEY not in log


def test_the_docs_offer_both_ways_of_sending_the_key(secured_server):
    schema = httpx.get(f"{secured_server.url}/openapi.json", timeout=10).json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/predict"]["post"]["security"] and "security" not in schema["paths"]["/healthz"]["get"]


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(f"{url}/predict", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})


def test_no_cors_headers_unless_configured(server):
    assert "access-control-allow-origin" not in httpx.get(f"{server.url}/healthz", headers={"Origin": ORIGIN}).headers
    response = preflight(server.url, ORIGIN)
    assert "access-control-allow-origin" not in response.headers and response.status_code == 405


def test_cors_allows_the_configured_origin_only(secured_server):
    response = preflight(secured_server.url, ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "x-api-key" in response.headers["access-control-allow-headers"].lower()
    answer = httpx.get(f"{secured_server.url}/healthz", headers={"Origin": ORIGIN}, timeout=10)
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.post(f"{secured_server.url}/predict", headers={"Origin": ORIGIN}, timeout=10)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN  # readable

    other = "https://elsewhere.example"
    assert "access-control-allow-origin" not in preflight(secured_server.url, other).headers
    assert "access-control-allow-origin" not in httpx.get(f"{secured_server.url}/healthz", headers={"Origin": other},
                                                          timeout=10).headers


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("environ, message", [
    ({"SIGNS_REQUEST_TIMEOUT_S": "0"}, "request_timeout_s"),
    ({"SIGNS_API_KEY": "two words"}, "api_key"),
    ({"SIGNS_API_KEY": "clé"}, "api_key"),
    ({"SIGNS_CORS_ORIGINS": "app.example"}, "cors_origins"),
    ({"SIGNS_PORT": "99999"}, r"port must be in 0\.\.65535"),
    ({"SIGNS_PORT": "-1"}, "port must be in"),
    ({"SIGNS_DECODE_THREADS": "-1"}, "decode_threads must not be negative"),
])
def test_bad_settings_are_refused_with_the_setting_named(environ, message):
    from signs_resnet.serving.settings import ServeSettings

    with pytest.raises(ValueError, match=message):
        ServeSettings.from_env(environ)


def test_cors_origins_are_a_comma_separated_list():
    from signs_resnet.serving.settings import ServeSettings

    settings = ServeSettings.from_env({"SIGNS_CORS_ORIGINS": "https://a.example, http://localhost:3000,"})
    assert settings.cors_origin_list == ["https://a.example", "http://localhost:3000"]
    assert ServeSettings().cors_origin_list == []


@pytest.mark.slow  # two server processes
def test_two_workers_serve_predict_and_one_metrics_page(model_file, tmp_path, signs_jpegs):
    """--workers 2: uvicorn imports the app factory by its module path in each worker process."""
    server = start_server(model_file, tmp_path / "server.log", "--workers", "2", "--engine", "torch-fp32")
    try:
        with httpx.Client(timeout=30) as client:
            # /readyz answered 200 from one worker; the other may still be warming up: 503 until it is
            deadline, answers = time.monotonic() + 60, []
            for path in signs_jpegs * 2:  # a dozen requests: both workers answer some
                while (response := client.post(f"{server.url}/predict", files={"image": path.read_bytes()})
                       ).status_code == 503 and time.monotonic() < deadline:
                    time.sleep(0.2)
                answers.append(response)
            assert [response.status_code for response in answers] == [200] * len(answers)
            assert all(response.json()["success"] for response in answers)
            metrics = client.get(f"{server.url}/metrics").text
        counted = re.search(r'signs_http_requests_total\{method="POST",route="/predict",status="200"\} (\d+)', metrics)
        assert counted and int(counted.group(1)) == 12  # one page over the worker processes
    finally:
        server.stop()


@pytest.mark.slow  # a server start
def test_without_hand_models_the_server_starts_serves_tensors_and_refuses_photos_clearly(model_file, tmp_path,
                                                                                         sample_jpg, signs_jpegs):
    """A serving install for tensors only: no hand models (an empty $SIGNS_HOME), and the server still starts,
    says once what it cannot do, answers FP32 tensors and 64x64 photos, and refuses bigger photos with 503."""
    server = start_server(model_file, tmp_path / "server.log", "--engine", "torch-fp32",
                          env={"SIGNS_HOME": str(tmp_path / "empty-home")})
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            zeros = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64],
                                 "data": [0.5] * (3 * 64 * 64)}]}
            tensor = client.post("/v2/models/signs-resnet50/infer", json=zeros)
            small = client.post("/predict", files={"image": signs_jpegs[0].read_bytes()})
            photo = client.post("/predict", files={"image": sample_jpg.read_bytes()})
            v2_photo = client.post("/v2/models/signs-resnet50/infer", json={"inputs": [{
                "name": "image", "datatype": "BYTES", "shape": [1],
                "data": [base64.b64encode(sample_jpg.read_bytes()).decode()]}]})
    finally:
        server.stop()
    assert tensor.status_code == 200 and small.status_code == 200 and small.json()["success"]
    assert photo.status_code == 503 and photo.json()["error"]["code"] == "hand_models_missing"
    assert "signs fetch-hand-models" in photo.json()["error"]["message"]
    assert str(tmp_path) not in photo.text + v2_photo.text  # the server's files stay in its log
    assert v2_photo.status_code == 503 and "signs fetch-hand-models" in v2_photo.json()["error"]
    log = server.log.read_text()
    assert log.count("photos larger than 64x64 are refused until the hand models are there") == 1
    assert "Traceback" not in log
