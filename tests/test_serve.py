"""The REST API, tested against the real server (`python -m signs_resnet serve`) on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from conftest import SHARED, command_environment, start_server
from PIL import Image

from signs_resnet import answer
from signs_resnet.data import preprocess
from signs_resnet.inference.engines import load_engine
from signs_resnet.inference.forward import predict
from signs_resnet.model_file import load_model
from signs_resnet.serving.runtime import INLINE_DECODE_MAX_PIXELS
from signs_resnet.serving.schemas import PredictResponse
from signs_resnet.serving.settings import ServeSettings

# The server's engine (OpenVINO, bf16 on this CPU) loaded here gives the same probabilities up to
# summation order. Against the fp32 training forward pass, bf16 differs by up to ~0.04.
SAME_ENGINE_TOLERANCE = 1e-3
BF16_TOLERANCE = 0.05


def post_images(client: httpx.Client, *files: tuple[str, bytes], params: dict | None = None) -> httpx.Response:
    return client.post("/predict", files=[("image", (name, blob, "image/jpeg")) for name, blob in files],
                       params=params)


def probabilities_by_label(predictions: list[dict]) -> dict[str, float]:
    return {p["label"]: p["probability"] for p in predictions}


class LocalModel:
    """The server's model loaded here: on the server's engine, and as trained (PyTorch fp32)."""

    def __init__(self, path):
        self.fp32 = load_model(path)
        self.engine = load_engine(self.fp32, ServeSettings().engine)
        self.classes = self.fp32.classes

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.engine.run(images)

    def probabilities_of(self, image_bytes: bytes) -> torch.Tensor:
        """The answer's probabilities: the engine's, weighed by the hand's count (answer.posterior)."""
        image, framing = preprocess.prepare(image_bytes)
        return torch.tensor(answer.posterior(self.fp32, self.probabilities(image.unsqueeze(0))[0].tolist(), framing))


@pytest.fixture(scope="module")
def local_model(model_file):
    return LocalModel(model_file)


def assert_same_probabilities(predictions: list[dict], expected: torch.Tensor, classes: list[str],
                              tolerance: float = SAME_ENGINE_TOLERANCE) -> None:
    actual = probabilities_by_label(predictions)
    for label, probability in zip(classes, expected.tolist()):
        assert actual[label] == pytest.approx(probability, abs=tolerance), (label, actual, expected)


# --- the original call ---------------------------------------------------------------------------


def test_predict_sample_like_the_original_curl_call(client, sample_jpg, model_file):
    response = post_images(client, ("sample.jpg", sample_jpg.read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    PredictResponse.model_validate(body)  # the documented response model
    assert body["success"] is True
    predictions = body["predictions"]
    assert sorted(p["label"] for p in predictions) == list("012345")
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1, abs=1e-4)
    assert body["results"][0]["predictions"] == predictions
    assert body["results"][0]["label"] == predictions[0]["label"]
    assert body["results"][0]["filename"] == "sample.jpg"
    assert body["model"]["checksum"] == load_model(model_file).checksum
    assert body["model"]["classes"] == list("012345")
    assert body["timing"]["batch_size"] >= 1 and body["timing"]["total_ms"] > 0
    assert "image" not in body["results"][0]


@pytest.mark.skipif(not os.environ.get("SIGNS_TEST_MODEL"),
                    reason="needs a trained model: SIGNS_TEST_MODEL=runs/default/model.safetensors")
def test_a_trained_model_reads_the_sample_as_5(client, sample_jpg):
    assert post_images(client, ("sample.jpg", sample_jpg.read_bytes())).json()["predictions"][0]["label"] == "5"


@pytest.mark.parametrize("photo", ["sample", "small"])
def test_api_preprocessing_is_training_preprocessing(client, sample_jpg, signs_jpegs, local_model, photo):
    """The same bytes give the same 64x64 input and the same probabilities as preprocess.prepare_image + predict,
    whether decoded in a decoding thread (the 1080x1440 sample) or on the event loop (a 64x64 photo)."""
    blob = (sample_jpg if photo == "sample" else signs_jpegs[2]).read_bytes()
    assert (Image.open(io.BytesIO(blob)).size[0] ** 2 <= INLINE_DECODE_MAX_PIXELS) == (photo == "small")
    body = post_images(client, ("photo.jpg", blob), params={"include_image": "true"}).json()
    url = body["results"][0]["image"]
    assert url.startswith("data:image/png;base64,")
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert seen.shape == (64, 64, 3)
    assert np.array_equal(seen, preprocess.load_rgb(blob))  # what the model saw, pixel for pixel
    assert_same_probabilities(body["predictions"], local_model.probabilities_of(blob), local_model.classes)
    image, framing = preprocess.prepare(blob)
    as_trained = answer.posterior(local_model.fp32, predict(local_model.fp32, image.unsqueeze(0))[0].tolist(), framing)
    assert_same_probabilities(body["predictions"], torch.tensor(as_trained), local_model.classes, BF16_TOLERANCE)


def test_a_webcam_frame_is_read_at_its_hand(client, local_model):
    """A whole webcam frame: the answer says where the hand was found, and the image the model saw is that
    square of the frame (include_image, what the web page shows), not the whole frame."""
    frames = sorted((SHARED / "real" / "hands_frames" / "2").glob("*.jpg"))
    if not frames:
        pytest.skip("no real/hands_frames photos")
    blob = frames[0].read_bytes()
    body = post_images(client, ("frame.jpg", blob), params={"include_image": "true"}).json()
    result = body["results"][0]
    hand = result["hand"]
    assert hand["found"] is True and 0.5 < hand["score"] <= 1
    left, top, right, bottom = hand["crop"]
    assert right - left == bottom - top and right - left < 0.8 * max(Image.open(io.BytesIO(blob)).size)
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image"].split(",", 1)[1]))))
    assert np.array_equal(seen, preprocess.load_rgb(blob))
    whole = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB").resize((64, 48)))
    assert np.abs(seen[8:56].astype(int) - whole.astype(int)).mean() > 20  # not the frame, resized
    assert_same_probabilities(body["predictions"], local_model.probabilities_of(blob), local_model.classes)


@pytest.mark.parametrize("flag, included", [("True", True), ("y", True), ("1", True), ("on", True),
                                             ("f", False), ("No", False), ("0", False), (None, False)])
def test_include_image_reads_booleans_as_fastapi_does(client, signs_jpegs, flag, included):
    params = {} if flag is None else {"include_image": flag}
    body = post_images(client, ("photo.jpg", signs_jpegs[0].read_bytes()), params=params).json()
    assert ("image" in body["results"][0]) == included


def test_several_images_in_one_request(client, sample_jpg, signs_jpegs, local_model):
    files = [("sample.jpg", sample_jpg.read_bytes())] + [(p.name, p.read_bytes()) for p in signs_jpegs[:3]]
    response = post_images(client, *files)
    assert response.status_code == 200, response.text
    body = response.json()
    PredictResponse.model_validate(body)
    assert "predictions" not in body  # the original's key describes a single image
    assert [r["filename"] for r in body["results"]] == [name for name, _ in files]
    assert body["timing"]["batch_size"] >= len(files)  # one request's images share a forward pass
    for (_, blob), result in zip(files, body["results"]):
        assert_same_probabilities(result["predictions"], local_model.probabilities_of(blob), local_model.classes)


# --- bad input -----------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb needs nothing more to be refused)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def streamed_upload(size: int):
    yield b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
    for _ in range(size // 2**20):
        yield b"\xff" * 2**20


def bad_requests(sample: bytes) -> dict[str, tuple]:
    """name: (method, path, request options, expected status, expected error code)."""
    truncated = sample[: len(sample) // 2]
    return {
        "missing image field": ("POST", "/predict", {"files": {"photo": ("a.jpg", sample)}}, 400, "missing_image"),
        "image field not a file": ("POST", "/predict", {"data": {"image": "hello"}, "files": {"x": ("x", b"x")}},
                                   400, "not_a_file"),
        "empty file": ("POST", "/predict", {"files": {"image": ("a.jpg", b"")}}, 400, "empty_file"),
        "not an image": ("POST", "/predict", {"files": {"image": ("a.jpg", b"hello, world" * 10)}}, 400,
                         "not_an_image"),
        "truncated image": ("POST", "/predict", {"files": {"image": ("a.jpg", truncated)}}, 400, "corrupt_image"),
        "decompression bomb": ("POST", "/predict", {"files": {"image": ("bomb.png", png_header(8000, 8000))}},
                               413, "too_many_pixels"),
        "over the size limit": ("POST", "/predict", {"files": {"image": ("big.jpg", b"\xff" * (10 * 2**20 + 1))}},
                                413, "payload_too_large"),
        "over the size limit, streamed": ("POST", "/predict", {  # chunked: no Content-Length to check up front
            "content": streamed_upload(11 * 2**20), "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}},
                                          413, "payload_too_large"),
        "boundary over 256 bytes": ("POST", "/predict", {"content": b"--" + b"b" * 300 + b"\r\n", "headers": {
            "Content-Type": "multipart/form-data; boundary=" + "b" * 300}}, 400, "malformed_multipart"),
        "wrong content type": ("POST", "/predict", {"json": {"image": "sample.jpg"}}, 415, "unsupported_media_type"),
        "no content type": ("POST", "/predict", {"content": sample}, 415, "unsupported_media_type"),
        "unsupported method": ("GET", "/predict", {}, 405, "method_not_allowed"),
        "unknown route": ("GET", "/nowhere", {}, 404, "not_found"),
        "bad query parameter": ("POST", "/predict?include_image=maybe", {"files": {"image": ("a.jpg", sample)}}, 400,
                                "invalid_request"),
    }


@pytest.mark.parametrize("case", list(bad_requests(b"")))
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(client, sample_jpg, case):
    method, path, options, status, code = bad_requests(sample_jpg.read_bytes())[case]
    response = client.request(method, path, **options)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if status == 405:
        assert "POST" in response.headers["allow"]
    with httpx.Client(base_url=str(client.base_url), timeout=30) as fresh:  # the server still answers
        assert post_images(fresh, ("sample.jpg", sample_jpg.read_bytes())).status_code == 200


def test_one_bad_image_fails_the_request_and_names_it(client, sample_jpg):
    response = post_images(client, ("good.jpg", sample_jpg.read_bytes()), ("bad.jpg", b"not an image"))
    assert response.status_code == 400
    assert "image 2 (bad.jpg)" in response.json()["error"]["message"]


def test_too_many_images_are_refused_before_any_is_decoded(client, sample_jpg):
    blob = sample_jpg.read_bytes()[:100]  # not decodable: decoding would answer 400 corrupt_image
    response = post_images(client, *[("a.jpg", blob)] * (ServeSettings().max_images + 1))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == {"code": "too_many_images", "message": "at most 64 images per request"}


# --- health, readiness, metrics, docs -----------------------------------------------------------


def test_readyz_answers_503_until_warmed_up_then_200(server, client, model_file):
    assert 503 in server.readiness  # seen while the model was warming up
    body = client.get("/readyz").json()
    assert body["ready"] is True and body["model"]["checksum"] == load_model(model_file).checksum
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics(client, sample_jpg):
    post_images(client, ("sample.jpg", sample_jpg.read_bytes()))
    client.get("/nowhere")
    text = client.get("/metrics").text
    assert re.search(r'signs_http_requests_total\{method="POST",route="/predict",status="200"\} [1-9]', text)
    assert re.search(r'signs_http_requests_total\{method="GET",route="<unmatched>",status="404"\} [1-9]', text)
    assert re.search(r'signs_http_request_duration_seconds_bucket\{le="0.005",route="/predict"\}', text)
    assert re.search(r"signs_batch_size_count [1-9]", text)
    assert re.search(r"signs_inference_seconds_count [1-9]", text)
    engine = r'engine="openvino(-int8)? \((bf16|fp32|int8)\)"'
    assert re.search(r'signs_model_info\{.*checksum="[0-9a-f]{64}".*' + engine + r'.*\} 1.0', text)


def test_openapi_docs(client):
    page = client.get("/docs").text
    assert "swagger" in page.lower()
    assert "https://" not in page and "http://" not in page  # every asset from this server (test_web.py loads it)
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page) or ["none found"]:
        assert client.get(asset).status_code == 200, asset
    schema = client.get("/openapi.json").json()
    for path in ("/predict", "/healthz", "/readyz", "/metrics", "/v2/models/{model_name}/infer"):
        assert path in schema["paths"]
    predict_route = schema["paths"]["/predict"]["post"]
    assert "multipart/form-data" in predict_route["requestBody"]["content"]
    assert predict_route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PredictResponse")
    assert "V2InferRequest" in schema["components"]["schemas"] and "V2InferInput" in schema["components"]["schemas"]


# --- Open Inference Protocol (KServe v2) ---------------------------------------------------------


def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/signs-resnet50/ready").json() == {"name": "signs-resnet50", "ready": True}
    metadata = client.get("/v2/models/signs-resnet50").json()
    assert metadata["name"] == "signs-resnet50"
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]} in metadata["inputs"]
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 6]} in metadata["outputs"]
    assert metadata["parameters"]["classes"] == list("012345")
    response = client.get("/v2/models/resnet18")
    assert response.status_code == 404 and "signs-resnet50" in response.json()["error"]


def test_v2_infer_fp32_tensor(client, sample_jpg, local_model):
    blob = sample_jpg.read_bytes()
    tensor = torch.stack([preprocess.prepare_image(blob), torch.zeros(3, 64, 64)])
    request = {"id": "42", "inputs": [{"name": "input", "shape": [2, 3, 64, 64], "datatype": "FP32",
                                       "data": tensor.reshape(-1).tolist()}]}
    response = client.post("/v2/models/signs-resnet50/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "signs-resnet50" and body["id"] == "42"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [2, 6] and outputs["probabilities"]["datatype"] == "FP32"
    probabilities = torch.tensor(outputs["probabilities"]["data"]).reshape(2, 6)
    assert torch.allclose(probabilities, local_model.probabilities(tensor), atol=SAME_ENGINE_TOLERANCE)
    assert outputs["label"]["data"] == [local_model.classes[i] for i in probabilities.argmax(1).tolist()]


def test_v2_infer_bytes_images_matches_predict(client, sample_jpg):
    blob = sample_jpg.read_bytes()
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [base64.b64encode(blob).decode()]}],
               "outputs": [{"name": "probabilities"}]}
    body = client.post("/v2/models/signs-resnet50/infer", json=request).json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    v2 = body["outputs"][0]["data"]
    original = probabilities_by_label(post_images(client, ("sample.jpg", blob)).json()["predictions"])
    assert v2 == pytest.approx([original[c] for c in "012345"], abs=SAME_ENGINE_TOLERANCE)


@pytest.mark.parametrize("request_body, status, reason", [
    ({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]}, 400,
     "FP32 input must have shape [N, 3, 64, 64], got [1, 3, 32, 32]"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * 5}]}, 400,
     "shape [1, 3, 64, 64] needs 12288 values, got 5"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": ["a"] * 12288}]}, 400,
     "FP32 data must be numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "INT8", "data": [0] * 12288}]}, 400,
     "datatype must be FP32 or BYTES, got 'INT8'"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}, 400,
     "image 1: BYTES data must be a base64-encoded image"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]}, 400,
     "image 1: not a readable image"),
    ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}],
      "outputs": [{"name": "embedding"}]}, 400, "unknown outputs ['embedding']"),
    ({"inputs": []}, 400, "send exactly one input"),
    ({"nothing": 1}, 400, "not an inference request: inputs: Field required"),
])
def test_v2_bad_requests_answer_the_protocols_error(client, request_body, status, reason):
    response = client.post("/v2/models/signs-resnet50/infer", json=request_body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and response.json()["error"].startswith(reason), response.text


def test_v2_infer_wants_json(client):
    response = client.post("/v2/models/signs-resnet50/infer", content=b"input=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]


# --- concurrency ---------------------------------------------------------------------------------


def batch_size_histogram(client: httpx.Client) -> tuple[float, float]:
    """(forward passes of one image, all forward passes) from /metrics."""
    text = client.get("/metrics").text
    single = float(re.search(r'signs_batch_size_bucket\{le="1.0"\} (\S+)', text).group(1))
    total = float(re.search(r"signs_batch_size_count (\S+)", text).group(1))
    return single, total


def test_concurrent_requests_are_batched_and_answered_individually(server, signs_jpegs, local_model):
    blobs = [p.read_bytes() for p in signs_jpegs]
    single_before, total_before = batch_size_histogram(httpx.Client(base_url=server.url))

    def one(index: int) -> tuple[int, str, dict]:
        with server.client() as client:
            response = post_images(client, (f"{index}.jpg", blobs[index % len(blobs)]))
            return index, response.status_code, response.json()

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(48)))
    assert all(status == 200 for _, status, _ in answers)
    assert all(body["results"][0]["filename"] == f"{index}.jpg" for index, _, body in answers)
    for index, _, body in answers:  # each answer is its own image's, whatever batch it rode in
        expected = local_model.probabilities_of(blobs[index % len(blobs)])
        assert_same_probabilities(body["predictions"], expected, local_model.classes)
    assert max(body["timing"]["batch_size"] for _, _, body in answers) > 1
    single, total = batch_size_histogram(httpx.Client(base_url=server.url))
    assert total - total_before < 48  # fewer forward passes than requests
    assert (total - total_before) - (single - single_before) > 0  # some of them held more than one image


@pytest.mark.slow  # a server of its own under a flood of phone photos
def test_full_queue_answers_503_with_retry_after(model_file, sample_jpg, tmp_path):
    server = start_server(model_file, tmp_path / "server.log", "--max-queue", "1", "--max-batch-size", "1",
                          "--max-wait-ms", "0", "--engine", "torch-fp32", env={"SIGNS_DECODE_THREADS": "4"})
    try:
        blob = sample_jpg.read_bytes()

        def one(_) -> httpx.Response:
            with server.client() as client:
                return post_images(client, ("sample.jpg", blob))

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(32)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"
        with server.client() as client:  # and it recovers
            assert post_images(client, ("sample.jpg", blob)).status_code == 200
    finally:
        server.stop()


# --- in-process: settings and the unexpected-error path ------------------------------------------


def test_settings_come_from_the_environment_and_flags_win():
    settings = ServeSettings.from_env({"SIGNS_PORT": "8080", "SIGNS_MAX_WAIT_MS": "0.5", "SIGNS_ACCESS_LOG": "true",
                                       "SIGNS_MODEL": "a.safetensors"}, model="b.safetensors")
    assert (settings.port, settings.max_wait_ms, settings.access_log, settings.model) == (8080, 0.5, True,
                                                                                           "b.safetensors")
    with pytest.raises(ValueError, match="SIGNS_PORT"):
        ServeSettings.from_env({"SIGNS_PORT": "http"})
    with pytest.raises(ValueError, match="engine"):
        ServeSettings.from_env({}, engine="tensorflow")


def test_decoding_threads_are_two_per_core_unless_set():
    from signs_resnet.hands.detector import search_threads, usable_cores
    from signs_resnet.serving.runtime import Runtime

    assert search_threads() == min(16, 2 * usable_cores())
    if hasattr(os, "sched_setaffinity"):  # a process held to one core (a container's cpuset, taskset) starts two
        one_core = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
                    "from signs_resnet.hands.detector import search_threads, usable_cores; "
                    "print(usable_cores(), search_threads())")
        assert subprocess.run([sys.executable, "-c", one_core], capture_output=True, text=True, check=True,
                              env=command_environment()).stdout.split() == ["1", "2"]
    for settings, threads in ((ServeSettings.from_env({}), search_threads()),
                              (ServeSettings.from_env({"SIGNS_DECODE_THREADS": "3"}), 3)):
        runtime = Runtime(settings)
        try:
            assert runtime.decoder._max_workers == threads
        finally:
            runtime.decoder.shutdown()


def test_every_setting_has_a_serve_flag():
    import dataclasses

    from signs_resnet.cli import build_parser

    parser = build_parser()
    serve = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    flags = {action.dest for action in serve._actions}
    assert [f.name for f in dataclasses.fields(ServeSettings) if f.name not in flags] == []
    args = parser.parse_args(["serve", "--max-wait-ms", "0.5", "--decode-threads", "3"])
    assert (args.max_wait_ms, args.decode_threads, args.port) == (0.5, 3, None)  # unset flags leave env/defaults


def test_unexpected_errors_are_logged_and_answered_with_a_generic_500(caplog):
    from signs_resnet.serving.app import create_app

    async def broken():
        raise RuntimeError("secret internals")

    async def get() -> httpx.Response:
        app = create_app(ServeSettings(model="not loaded: no lifespan in-process"))
        app.add_api_route("/broken", broken)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/broken")

    with caplog.at_level(logging.ERROR, logger="signs_resnet.serving.app"):
        response = asyncio.run(get())
    assert response.status_code == 500
    assert response.json() == {"success": False, "error": {"code": "internal_error",
                                                           "message": "internal server error"}}
    assert "secret internals" not in response.text
    assert any(record.exc_info and "secret internals" in str(record.exc_info[1]) for record in caplog.records)


@pytest.mark.slow  # a process of its own; the quick tier's server tests cover the module
def test_cli_refuses_a_missing_model_without_a_traceback(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "signs_resnet", "serve", "--model", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no such model file" in result.stderr and "Traceback" not in result.stderr


def test_error_answers_are_documented(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["schemas"]["ErrorResponse"]["properties"]) == {"success", "error"}
    responses = schema["paths"]["/predict"]["post"]["responses"]
    for status in ("400", "413", "415", "503"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_the_warm_up_runs_the_powers_of_two_and_the_largest_batch():
    from signs_resnet.inference.engines import warm_up_sizes

    assert [warm_up_sizes(n) for n in (1, 2, 5, 32)] == [[1], [1, 2], [1, 2, 4, 5], [1, 2, 4, 8, 16, 32]]
