"""The live-camera stream, a WebSocket at /stream, tested against the real server on a loopback port with a real
WebSocket client (websockets' sync client)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, SHARED, start_server
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

KEY = "stream-test-key"
MAX_UPLOAD_BYTES = 300_000  # over sample.jpg's 69 kB
MAX_PIXELS = 2_000_000  # over sample.jpg's 1080x1440
FRAME = SHARED / "real" / "hands_frames" / "3" / "1528664299.56_pic00046.jpg"  # a 400x300 webcam frame


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory):
    """A server with a key, two streams at most, and limits the test images can cross (a quick engine)."""
    server = start_server(model_file, tmp_path_factory.mktemp("stream") / "server.log", "--engine", "torch-fp32",
                          "--max-batch-size", "4", "--max-streams", "2", "--max-upload-bytes",
                          str(MAX_UPLOAD_BYTES), "--max-pixels", str(MAX_PIXELS), env={"SIGNS_API_KEY": KEY})
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_open_streams(server):
    """Each test starts with none of the server's two streams taken (it learns of a close a moment after the
    client does)."""
    wait_for_open_streams(server, 0)


def stream_url(server, query: str = f"?api_key={KEY}") -> str:
    return server.url.replace("http://", "ws://") + "/stream" + query


def open_stream(server, query: str = f"?api_key={KEY}", **options):
    return connect(stream_url(server, query), open_timeout=10, close_timeout=5, **options)


def ask(stream, frame: bytes | str, timeout: float = 30) -> dict:
    stream.send(frame)
    return json.loads(stream.recv(timeout))


def closed_with(stream) -> tuple[int, str]:
    """The close code and reason of a stream the server closes before answering anything."""
    with pytest.raises(ConnectionClosed) as closed:
        stream.recv(10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


def metrics(server) -> dict[str, float]:
    """The stream metrics, by their line's name and labels."""
    with server.client() as client:
        text = client.get("/metrics").text
    return {name: float(value) for name, value in re.findall(r"^(signs_stream\S*) (\S+)$", text, re.M)}


def wait_for_open_streams(server, count: int, seconds: float = 10) -> None:
    """Until the server counts `count` open streams (it learns of a close a moment after the client)."""
    deadline = time.monotonic() + seconds
    while metrics(server).get("signs_streams_open") != count:
        assert time.monotonic() < deadline, f"the server still counts {metrics(server)} open streams"
        time.sleep(0.02)


def png(size: tuple[int, int], noise: bool = False) -> bytes:
    pixels = (np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noise
              else np.full((size[1], size[0], 3), 200, np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def by_label(predictions: list[dict]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in predictions}


# --- answers ---------------------------------------------------------------------------------------


def test_frames_are_answered_as_predict_answers_the_same_photos(server, sample_jpg, signs_jpegs):
    photos = [sample_jpg.read_bytes(), FRAME.read_bytes(), signs_jpegs[3].read_bytes()]
    with server.client(headers={"X-API-Key": KEY}) as client:
        expected = []
        for photo in photos:
            response = client.post("/predict", files=[("image", ("photo.jpg", photo, "image/jpeg"))])
            assert response.status_code == 200, response.text
            expected.append(response.json()["results"][0])
    with open_stream(server, f"?api_key={KEY}&track=0") as stream:  # every frame's hand found as /predict finds it
        answers = [ask(stream, photo) for photo in photos]
    assert [answer["frame"] for answer in answers] == [1, 2, 3]
    for answer, result in zip(answers, expected):
        # what /predict's result holds, from the same code: every key but the filename, plus the stream's own
        assert set(answer) == set(result) - {"filename"} | {"frame", "tracked", "shown", "server_ms"}
        assert answer["server_ms"] > 0 and answer["tracked"] is False
        assert (answer["label"], answer["confident"], answer["hand"]) == (result["label"], result["confident"],
                                                                          result["hand"])
        assert answer["probability"] == pytest.approx(result["probability"], abs=1e-4)
        assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in result["predictions"]]
        assert by_label(answer["predictions"]) == pytest.approx(by_label(result["predictions"]), abs=1e-4)
    assert answers[0]["hand"]["found"] and answers[2]["hand"] is None  # the photo searched; the 64x64 read as it is


@pytest.mark.parametrize("frame, code", [
    (b"\x00garbage, not an image", "not_an_image"),
    ("a text message", "not_binary"),
    (b"", "empty_file"),
    (png((400, 400), noise=True), "payload_too_large"),  # ~480 kB of noise, over MAX_UPLOAD_BYTES
    (png((1500, 1500)), "too_many_pixels"),  # a few kB, over MAX_PIXELS
], ids=["garbage", "text", "empty", "too many bytes", "too many pixels"])
def test_a_bad_frame_gets_an_error_and_the_stream_goes_on(server, signs_jpegs, frame, code):
    with open_stream(server) as stream:
        assert ask(stream, signs_jpegs[0].read_bytes())["frame"] == 1
        error = ask(stream, frame)
        assert error["frame"] == 2 and set(error) == {"frame", "error"}
        assert error["error"]["code"] == code and error["error"]["message"]
        if code == "payload_too_large":
            assert str(MAX_UPLOAD_BYTES) in error["error"]["message"]
        answer = ask(stream, signs_jpegs[1].read_bytes())
        assert answer["frame"] == 3 and answer["label"] in "012345"


def test_a_message_over_twice_the_limit_ends_the_stream_with_1009(server):
    with open_stream(server) as stream:
        stream.send(b"\xff" * (2 * MAX_UPLOAD_BYTES + 1))
        assert closed_with(stream)[0] == 1009  # message too big: the WebSocket layer never buffers it


# --- who may stream --------------------------------------------------------------------------------


def test_the_api_key_is_required(server, signs_jpegs):
    before = metrics(server)
    for query, headers, reason in [("", None, "missing API key"), ("?api_key=wrong", None, "wrong API key"),
                                   ("?api_key=%E2%82%AC", None, "wrong API key"),
                                   ("", {"X-API-Key": "wrong"}, "wrong API key")]:
        with open_stream(server, query, additional_headers=headers) as stream:
            code, message = closed_with(stream)
        assert code == 1008 and message.startswith(reason) and "?api_key=KEY" in message
    refused = metrics(server)
    assert refused['signs_streams_refused_total{reason="api_key"}'] - before.get(
        'signs_streams_refused_total{reason="api_key"}', 0) == 4
    for name in ('signs_stream_frames_total{outcome="answered"}', 'signs_stream_frames_total{outcome="error"}'):
        assert refused.get(name) == before.get(name)  # no frame was read from a refused stream
    for query, headers in [(f"?api_key={KEY}", None), ("", {"X-API-Key": KEY}),
                           ("", {"Authorization": f"Bearer {KEY}"})]:
        with open_stream(server, query, additional_headers=headers) as stream:
            assert ask(stream, signs_jpegs[0].read_bytes())["frame"] == 1
        wait_for_open_streams(server, 0)


def test_pages_from_other_origins_are_refused_as_cors_would(server, signs_jpegs):
    with open_stream(server, origin="https://elsewhere.example") as stream:
        code, message = closed_with(stream)
    assert code == 1008 and "origin" in message
    with open_stream(server, origin=server.url) as stream:  # the server's own page
        assert ask(stream, signs_jpegs[0].read_bytes())["frame"] == 1


def test_streams_past_the_limit_are_refused_with_1013_until_one_closes(server, signs_jpegs):
    photo = signs_jpegs[0].read_bytes()
    with open_stream(server) as first, open_stream(server) as second:
        assert ask(first, photo)["frame"] == ask(second, photo)["frame"] == 1
        with open_stream(server) as third:
            code, message = closed_with(third)
        assert code == 1013 and "2 streams" in message
        assert metrics(server)["signs_streams_open"] == 2
        first.close()
        deadline = time.monotonic() + 10
        while True:  # the server learns of the close a moment after the client
            with open_stream(server) as third:
                try:
                    assert ask(third, photo)["frame"] == 1
                    break
                except ConnectionClosed as closed:
                    assert closed.rcvd.code == 1013 and time.monotonic() < deadline
            time.sleep(0.05)
    assert metrics(server)['signs_streams_refused_total{reason="limit"}'] >= 1


# --- backpressure ----------------------------------------------------------------------------------


def test_a_flooding_client_gets_the_newest_frame_answered_and_the_stale_ones_dropped(server, sample_jpg):
    """200 photos sent as fast as possible: each is answered or dropped (none queued), far fewer are answered,
    and the last one is, soon after it was sent."""
    photo, sent = sample_jpg.read_bytes(), 200
    before = metrics(server)
    with open_stream(server) as stream:
        for _ in range(sent):
            stream.send(photo)
        last_sent = time.monotonic()
        answers = [json.loads(stream.recv(30))]
        while answers[-1]["frame"] != sent:
            answers.append(json.loads(stream.recv(30)))
        waited = time.monotonic() - last_sent
    frames = [answer["frame"] for answer in answers]
    assert frames == sorted(set(frames)) and all("label" in answer for answer in answers)
    assert len(answers) < sent / 4, frames  # each answer takes the hand finder's time; the stream does not wait
    assert waited < 10  # a queue of 200 photos would take as many hand searches
    wait_for_open_streams(server, 0)
    after = metrics(server)
    counted = {outcome: after.get(f'signs_stream_frames_total{{outcome="{outcome}"}}', 0)
               - before.get(f'signs_stream_frames_total{{outcome="{outcome}"}}', 0)
               for outcome in ("answered", "dropped", "error")}
    assert counted == {"answered": len(answers), "dropped": sent - len(answers), "error": 0}


# --- metrics, shutdown, docs -----------------------------------------------------------------------


def test_metrics_count_streams_and_frames(server, signs_jpegs):
    before = metrics(server)
    with open_stream(server) as stream:
        ask(stream, signs_jpegs[0].read_bytes())
        ask(stream, b"not an image")
        ask(stream, signs_jpegs[1].read_bytes())
        assert metrics(server)["signs_streams_open"] == 1
    wait_for_open_streams(server, 0)
    after = metrics(server)
    for outcome, count in (("answered", 2), ("error", 1)):
        name = f'signs_stream_frames_total{{outcome="{outcome}"}}'
        assert after[name] - before.get(name, 0) == count


@pytest.mark.slow  # a server start
def test_an_open_stream_does_not_hold_up_shutdown(uniform_model_file, signs_jpegs, tmp_path):
    server = start_server(uniform_model_file, tmp_path / "server.log", "--engine", "torch-fp32",
                          "--max-batch-size", "1")
    try:
        with connect(stream_url(server, ""), open_timeout=10) as stream:
            assert ask(stream, signs_jpegs[0].read_bytes())["frame"] == 1
            signalled = time.monotonic()
            server.process.terminate()
            assert closed_with(stream)[0] == 1012  # service restart: the client may reconnect elsewhere
            assert server.process.wait(10) == 0
        assert time.monotonic() - signalled < 5  # not request_timeout_s, uvicorn's longest graceful wait
    finally:
        server.stop()


def test_the_python_example_in_api_md_runs_against_the_server(server, sample_jpg, tmp_path):
    """docs/api.md's stream client, pointed at the test server, with its key in SIGNS_API_KEY."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S)
    [block] = [block for block in blocks if "websockets.sync.client" in block]
    (tmp_path / "sample.jpg").symlink_to(sample_jpg)
    code = block.replace("localhost:5000", server.url.removeprefix("http://"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            timeout=60, env=os.environ | {"SIGNS_API_KEY": KEY}, check=False)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["1", "2"]
    assert all(line[1] in "012345" and line[2] in ("True", "False") for line in lines), lines


@pytest.mark.slow  # a server of its own
def test_https_and_wss_with_the_servers_own_certificate(uniform_model_file, sample_jpg, tmp_path):
    """`signs serve --ssl-certfile/--ssl-keyfile`: the page and /predict over HTTPS, /stream over WSS, checked
    against the certificate (a phone's browser gives the camera only to a secure page); plain HTTP gets no
    answer on that port; one file without the other is refused before serving."""
    import ssl

    import httpx

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    trusted = ssl.create_default_context(cafile=str(cert))
    server = start_server(uniform_model_file, tmp_path / "server.log", "--engine", "torch-fp32",
                          "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    try:
        assert server.url.startswith("https://")
        with server.client(verify=trusted) as client:
            assert "Use camera" in client.get("/").text
            predicted = client.post("/predict", files={"image": ("s.jpg", sample_jpg.read_bytes())}).json()
        with connect(server.url.replace("https://", "wss://") + "/stream", ssl=trusted) as stream:
            stream.send(sample_jpg.read_bytes())
            answer = json.loads(stream.recv(timeout=60))
        assert answer["label"] == predicted["results"][0]["label"] == "5"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        server.stop()
    refused = subprocess.run([sys.executable, "-m", "signs_resnet", "serve", "--model", str(uniform_model_file),
                              "--ssl-certfile", str(cert)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode != 0 and "ssl_certfile and ssl_keyfile go together" in refused.stderr
    assert "Traceback" not in refused.stderr
