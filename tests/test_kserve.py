"""The Open Inference Protocol over REST as NVIDIA's own client speaks it (tritonclient.http, JSON and the
binary tensor data extension), and each malformed binary request, against the running server."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import API_KEY
from test_serve import SAME_ENGINE_TOLERANCE, png_header, post_images, probabilities_by_label
from tritonclient.utils import InferenceServerException

from signs_resnet.data import preprocess

MODEL = "signs-resnet50"
INFER = f"/v2/models/{MODEL}/infer"
ONE_IMAGE = 3 * 64 * 64 * 4  # bytes of one FP32 image


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def predict_rows(client: httpx.Client, *blobs: bytes) -> np.ndarray:
    """/predict's probabilities for each photo, in class order."""
    rows = []
    for blob in blobs:
        by_label = probabilities_by_label(post_images(client, ("photo.jpg", blob)).json()["predictions"])
        rows.append([by_label[c] for c in "012345"])
    return np.array(rows)


def prepared(*blobs: bytes) -> tuple[np.ndarray, list[bytes]]:
    """Photos as FP32 input takes them (prepare_image: the hand cut out, 64x64), and the same 64x64 images as
    PNG files, which /predict reads as they are: FP32 input was framed by the client, so no hand is looked for
    and no count weighs its answer (answer.posterior), as in /predict for a 64x64 photo."""
    import io

    from PIL import Image

    images = np.stack([preprocess.prepare_image(blob).numpy() for blob in blobs])
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return images, pngs


def labels(result) -> list[str]:
    """The label output as text: tritonclient gives bytes from binary data, text from JSON."""
    return [value.decode() if isinstance(value, bytes) else value for value in result.as_numpy("label").tolist()]


def test_health_and_metadata(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    metadata = triton_client.get_model_metadata(MODEL)
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]} in metadata["inputs"]
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in metadata["inputs"]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label", "confident", "network", "hand_counts"]
    assert metadata["parameters"]["max_images"] == 64
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


OUTPUT_FORMS = {  # requested outputs: name -> binary_data, or None: none named (the client asks binary_data_output)
    "all, unnamed": None,
    "json": {"probabilities": False, "label": False},
    "binary": {"probabilities": True, "label": True},
    "mixed": {"probabilities": True, "label": False},
    "probabilities only, json": {"probabilities": False},
}


@pytest.mark.parametrize("binary_input", [False, True], ids=["json input", "binary input"])
@pytest.mark.parametrize("form", list(OUTPUT_FORMS))
def test_fp32_input_gives_predicts_answer(triton_client, client, sample_jpg, signs_jpegs, binary_input, form):
    images, pngs = prepared(sample_jpg.read_bytes(), signs_jpegs[2].read_bytes())
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary_input)
    wanted = OUTPUT_FORMS[form]
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name, binary in wanted.items()] if wanted \
        else None
    result = triton_client.infer(MODEL, [tensor], outputs=outputs, request_id="7")
    answer = result.get_response()
    assert answer["id"] == "7" and answer["model_name"] == MODEL
    sent = {o["name"]: o for o in answer["outputs"]}
    assert list(sent) == list(wanted or ["probabilities", "label", "confident", "network", "hand_counts"])
    for name, output in sent.items():  # each output in the form asked for
        binary = wanted[name] if wanted else True
        assert ("binary_data_size" in output.get("parameters", {})) == binary and ("data" in output) == (not binary)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 6) and probabilities.dtype == np.float32
    assert np.allclose(probabilities, predict_rows(client, *pngs), atol=SAME_ENGINE_TOLERANCE)
    if "label" in sent:
        assert labels(result) == [str(i) for i in probabilities.argmax(1)]
    if "confident" in sent:
        assert result.as_numpy("confident").tolist() == [False, False]  # tensors carry no hand: never confident


def test_bytes_image_files_in_binary_give_predicts_answer(triton_client, client, sample_jpg, signs_jpegs):
    blobs = [sample_jpg.read_bytes(), signs_jpegs[4].read_bytes(), signs_jpegs[0].read_bytes()]
    tensor = triton.InferInput("image", [len(blobs)], "BYTES")
    tensor.set_data_from_numpy(np.array(blobs, dtype=np.object_))  # binary: BYTES files are not JSON text
    result = triton_client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("probabilities"),
                                                            triton.InferRequestedOutput("label", binary_data=False),
                                                            triton.InferRequestedOutput("hand_counts")])
    expected = predict_rows(client, *blobs)
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=SAME_ENGINE_TOLERANCE)
    assert labels(result) == [str(i) for i in expected.argmax(1)]
    # the hand's reading, as /predict's answer carries it: sample.jpg's open hand reads 5; 64x64 photos are not searched
    counts = result.as_numpy("hand_counts")
    hand = client.post("/predict", files={"image": ("s.jpg", blobs[0], "image/jpeg")}).json()["results"][0]["hand"]
    assert counts.shape == (3, 6) and counts[0].argmax() == 5 == hand["fingers"]
    assert np.allclose(counts[0], hand["counts"], atol=1e-4) and not counts[1:].any()


def test_a_model_version_is_the_served_one_or_404(triton_client, client, sample_jpg):
    version = triton_client.get_model_metadata(MODEL)["versions"][0]
    assert triton_client.is_model_ready(MODEL, model_version=version)
    assert triton_client.get_model_metadata(MODEL, model_version=version)["versions"] == [version]
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([sample_jpg.read_bytes()], dtype=np.object_))
    result = triton_client.infer(MODEL, [tensor], model_version=version)
    assert np.allclose(result.as_numpy("probabilities"), predict_rows(client, sample_jpg.read_bytes()),
                       atol=SAME_ENGINE_TOLERANCE)
    with pytest.raises(InferenceServerException, match=f"unknown version '7' of '{MODEL}'"):
        triton_client.infer(MODEL, [tensor], model_version="7")
    assert client.get(f"/v2/models/{MODEL}/versions/7/ready").status_code == 404


def test_json_without_a_content_type(client, sample_jpg):
    images, [png] = prepared(sample_jpg.read_bytes())
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64],
                                   "data": images.reshape(-1).tolist()}]})
    response = client.post(INFER, content=body.encode())  # no Content-Type, as tritonclient sends JSON
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["outputs"][0]["data"] == pytest.approx(predict_rows(client, png)[0],
                                                                   abs=SAME_ENGINE_TOLERANCE)


def test_api_key_is_sent_as_a_header(keyed_server, sample_jpg):
    client = triton.InferenceServerClient(keyed_server.url.removeprefix("http://"))
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([sample_jpg.read_bytes()], dtype=np.object_))
    try:
        assert client.is_server_live() and client.is_model_ready(MODEL)  # health stays open
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, [tensor])
        assert refused.value.status() == "401" and "missing API key" in refused.value.message()
        with pytest.raises(InferenceServerException) as wrong:
            client.infer(MODEL, [tensor], headers={"X-API-Key": "wrong"})
        assert wrong.value.status() == "401" and "wrong API key" in wrong.value.message()
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            assert client.infer(MODEL, [tensor], headers=headers).as_numpy("probabilities").shape == (1, 6)
    finally:
        client.close()


# --- malformed binary requests -------------------------------------------------------------------


def binary_body(inputs: list[tuple[dict, bytes]], header_length: int | str | None = "auto", extra: bytes = b"",
                **request) -> tuple[bytes, dict[str, str]]:
    """A request with each input's `binary_data_size` and bytes after the JSON; `header_length` "auto" is
    the JSON's true length, None leaves the header out."""
    header = json.dumps({"inputs": [tensor for tensor, _ in inputs], **request}).encode()
    headers = {} if header_length is None else {
        "Inference-Header-Content-Length": str(len(header) if header_length == "auto" else header_length)}
    return header + b"".join(raw for _, raw in inputs) + extra, headers


def fp32(raw: bytes, shape=(1, 3, 64, 64), size: int | str | None = None, datatype="FP32", **fields) -> tuple:
    return ({"name": "input", "datatype": datatype, "shape": list(shape),
             "parameters": {"binary_data_size": len(raw) if size is None else size}, **fields}, raw)


def files(raw: bytes, shape=(1,), size: int | None = None) -> tuple:
    return ({"name": "image", "datatype": "BYTES", "shape": list(shape),
             "parameters": {"binary_data_size": len(raw) if size is None else size}}, raw)


def element(blob: bytes) -> bytes:
    return len(blob).to_bytes(4, "little") + blob


ZEROS = bytes(ONE_IMAGE)
GOOD, GOOD_HEADERS = binary_body([fp32(ZEROS)])


def bad_binary_requests() -> dict[str, tuple]:
    """name: ((body, headers), expected status, the start of the expected error)."""
    json_length = int(GOOD_HEADERS["Inference-Header-Content-Length"])
    nan = np.full((1, 3, 64, 64), np.nan, dtype="<f4").tobytes()
    return {
        "header length not a number": (binary_body([fp32(ZEROS)], header_length="12x"), 400,
                                       "Inference-Header-Content-Length must be a number of bytes, got '12x'"),
        "header length past the body": (binary_body([fp32(ZEROS)], header_length=len(GOOD) + 1), 400,
                                        f"Inference-Header-Content-Length is {len(GOOD) + 1}, but the body has"),
        "header length short of the JSON": (binary_body([fp32(ZEROS)], header_length=json_length - 1), 400,
                                            f"not an inference request (the first {json_length - 1} bytes"),
        "header length past the JSON": (binary_body([fp32(ZEROS)], header_length=json_length + 4), 400,
                                        f"not an inference request (the first {json_length + 4} bytes"),
        "binary data without the header": (binary_body([fp32(ZEROS)], header_length=None), 400,
                                           "not an inference request: body: Invalid JSON"),
        "truncated binary part": (binary_body([fp32(ZEROS[:-152], size=ONE_IMAGE)]), 400,
                                  f"input 'input': binary_data_size {ONE_IMAGE} runs past the end of the body "
                                  f"({ONE_IMAGE - 152} bytes of binary data left)"),
        "sizes short of the binary part": (binary_body([fp32(ZEROS)], extra=b"\0" * 8), 400,
                                           f"{ONE_IMAGE + 8} bytes of binary data follow the JSON header, but the "
                                           f"inputs' binary_data_size add up to {ONE_IMAGE}"),
        "binary_data_size not a number": (binary_body([fp32(ZEROS, size="49152")]), 400,
                                          "input 'input': binary_data_size must be a whole number of bytes"),
        "binary_data_size negative": (binary_body([fp32(ZEROS, size=-1)]), 400,
                                      "input 'input': binary_data_size must be a whole number of bytes"),
        "FP32 bytes for another shape": (binary_body([fp32(ZEROS, shape=(2, 3, 64, 64))]), 400,
                                         "shape [2, 3, 64, 64] needs 24576 values, got 12288"),
        "FP32 bytes not whole values": (binary_body([fp32(ZEROS[:-1])]), 400,
                                        f"input 'input': {ONE_IMAGE - 1} bytes of FP32 data is not a whole number"),
        "FP32 wrong shape": (binary_body([fp32(ZEROS[:3 * 32 * 32 * 4], shape=(1, 3, 32, 32))]), 400,
                             "FP32 input must have shape [N, 3, 64, 64], got [1, 3, 32, 32]"),
        "FP32 not finite": (binary_body([fp32(nan)]), 400, "FP32 data must be finite numbers"),
        "wrong datatype": (binary_body([fp32(ZEROS, datatype="FP16")]), 400,
                           "datatype must be FP32 or BYTES, got 'FP16'"),
        "data and binary data": (binary_body([fp32(ZEROS, data=[0.0])]), 400,
                                 "input 'input': send its data once"),
        "BYTES length past the end": (binary_body([files(element(b"x" * 100)[:-10])]), 400,
                                      "input 'image': BYTES element 1 claims 100 bytes, 90 are left"),
        "BYTES cut inside a length": (binary_body([files(b"\x05\0")]), 400,
                                      "input 'image': BYTES data ends inside the length of element 1"),
        "BYTES fewer files than the shape": (binary_body([files(element(b"abc"), shape=(2,))]), 400,
                                             "shape [2] does not match 1 images"),
        "BYTES not an image": (binary_body([files(element(b"hello, world"))]), 400, "image 1: not a readable image"),
        "BYTES empty file": (binary_body([files(element(b""))]), 400, "image 1: the file is empty"),
        "binary_data_output not a boolean": (binary_body([fp32(ZEROS)], parameters={"binary_data_output": "yes"}),
                                             400, "parameter binary_data_output must be true or false"),
        "unknown output": (binary_body([fp32(ZEROS)], outputs=[{"name": "embedding",
                                                                 "parameters": {"binary_data": True}}]), 400,
                           "unknown outputs ['embedding']"),
        "compressed body": ((GOOD, GOOD_HEADERS | {"Content-Encoding": "gzip"}), 415,
                            "send the body uncompressed"),
        # every limit holds on this path too
        "too many BYTES files": (binary_body([files(element(b"x") * 65, shape=(65,))]), 413,
                                 "at most 64 images per request"),
        "too many FP32 images": (binary_body([fp32(ZEROS * 65, shape=(65, 3, 64, 64))]), 413,
                                 "at most 64 images per request"),
        "decompression bomb": (binary_body([files(element(png_header(8000, 8000)))]), 413, "image 1: "),
        "over the body limit": (binary_body([fp32(b"\0" * (10 * 2**20))]), 413, "request body over the limit"),
    }


@pytest.mark.parametrize("tensor, reason", [
    ({"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [True] * 12288},
     "FP32 data must be numbers"),
    ({"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": ["0.5"] * 12288},
     "FP32 data must be numbers"),
    ({"name": "image", "shape": [-1, -1], "datatype": "BYTES", "data": ["aGVsbG8="]},
     "BYTES input must have a shape of positive sizes, got [-1, -1]"),
], ids=["booleans", "strings", "negative sizes"])
def test_json_tensors_of_the_wrong_kind_are_refused(client, tensor, reason):
    response = client.post(INFER, json={"inputs": [tensor]})
    assert response.status_code == 400 and response.json()["error"].startswith(reason), response.text


@pytest.mark.parametrize("case", list(bad_binary_requests()))
def test_malformed_binary_requests_are_the_protocols_4xx(client, case):
    (body, headers), status, reason = bad_binary_requests()[case]
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and response.json()["error"].startswith(reason), response.text
    with httpx.Client(base_url=str(client.base_url), timeout=30) as fresh:
        assert fresh.get("/healthz").json() == {"status": "ok"}
        assert fresh.post(INFER, content=GOOD, headers=GOOD_HEADERS).status_code == 200  # still serving


def test_the_well_formed_request_of_those_cases_is_answered(client):
    response = client.post(INFER, content=GOOD, headers=GOOD_HEADERS)
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [1, 6]
