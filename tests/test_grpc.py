"""The Open Inference Protocol over gRPC, against the running server: driven by NVIDIA's own client
(tritonclient.grpc), and, for what that client never sends (contents instead of raw data, malformed
tensors), by the stub Triton's client generates from its own copy of the service."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from conftest import API_KEY, start_server
from test_kserve import INFER, binary_body, element, files, labels, predict_rows, prepared
from test_serve import SAME_ENGINE_TOLERANCE, png_header
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

MODEL = "signs-resnet50"


@pytest.fixture(scope="module")
def triton_client(server):
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_health_and_metadata(triton_client):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    with pytest.raises(InferenceServerException, match="unknown model 'resnet18'"):
        triton_client.is_model_ready("resnet18")
    metadata = triton_client.get_model_metadata(MODEL, as_json=True)
    assert metadata["name"] == MODEL and len(metadata["versions"]) == 1
    inputs = {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in metadata["inputs"]}
    assert inputs == {"input": ("FP32", [-1, 3, 64, 64]), "image": ("BYTES", [-1])}
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label", "confident", "network", "hand_counts"]


@pytest.mark.parametrize("requested", [None, ["probabilities"], ["label", "probabilities"]])
def test_fp32_raw_input_gives_predicts_answer(triton_client, client, sample_jpg, signs_jpegs, requested):
    images, pngs = prepared(sample_jpg.read_bytes(), signs_jpegs[3].read_bytes())
    tensor = triton.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)  # tritonclient sends raw_input_contents
    outputs = [triton.InferRequestedOutput(name) for name in requested] if requested else None
    result = triton_client.infer(MODEL, [tensor], outputs=outputs, request_id="9")
    answer = result.get_response(as_json=True)
    assert answer["id"] == "9" and [o["name"] for o in answer["outputs"]] == (requested or ["probabilities", "label", "confident", "network", "hand_counts"])
    expected = predict_rows(client, *pngs)
    if "probabilities" in (requested or ["probabilities"]):
        assert np.allclose(result.as_numpy("probabilities"), expected, atol=SAME_ENGINE_TOLERANCE)
    if "label" in (requested or ["label"]):
        assert labels(result) == [str(i) for i in expected.argmax(1)]


def test_bytes_image_files_give_predicts_answer(triton_client, client, sample_jpg, signs_jpegs):
    blobs = [sample_jpg.read_bytes(), signs_jpegs[1].read_bytes()]
    tensor = triton.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(blobs, dtype=np.object_))
    result = triton_client.infer(MODEL, [tensor])
    expected = predict_rows(client, *blobs)
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=SAME_ENGINE_TOLERANCE)
    assert labels(result) == [str(i) for i in expected.argmax(1)]


def infer_request(datatype="FP32", shape=(1, 3, 64, 64), contents=None, raw=(), name=None, **fields):
    tensor = pb.ModelInferRequest.InferInputTensor(name=name or ("input" if datatype == "FP32" else "image"),
                                                   datatype=datatype, shape=list(shape))
    if contents is not None:
        tensor.contents.CopyFrom(contents)
    return pb.ModelInferRequest(**({"model_name": MODEL} | fields), inputs=[tensor], raw_input_contents=list(raw))


def probabilities_of(answer: pb.ModelInferResponse) -> np.ndarray:
    [index] = [i for i, output in enumerate(answer.outputs) if output.name == "probabilities"]
    return np.frombuffer(answer.raw_output_contents[index], dtype="<f4").reshape(list(answer.outputs[index].shape))


def test_contents_instead_of_raw_data(stub, client, sample_jpg):
    blob = sample_jpg.read_bytes()
    images, [png] = prepared(blob)
    as_numbers = stub.ModelInfer(infer_request(contents=pb.InferTensorContents(fp32_contents=images.reshape(-1).tolist())))
    as_files = stub.ModelInfer(infer_request("BYTES", (1,), pb.InferTensorContents(bytes_contents=[blob])))
    # FP32 numbers are /predict's answer for the 64x64 image as it is; files, its answer for the photo (with the count)
    for answer, sent in ((as_numbers, png), (as_files, blob)):
        assert [o.name for o in answer.outputs] == ["probabilities", "label", "confident", "network", "hand_counts"]
        assert answer.raw_output_contents[2] in (b"\x00", b"\x01")  # BOOL: one byte each
        assert np.allclose(probabilities_of(answer), predict_rows(client, sent), atol=SAME_ENGINE_TOLERANCE)


ZEROS = bytes(3 * 64 * 64 * 4)


def bad_requests() -> dict[str, tuple]:
    """name: (request, expected status code, the start of the expected message)."""
    invalid, too_big, unknown = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 grpc.StatusCode.NOT_FOUND)
    two_inputs = infer_request(raw=[ZEROS, ZEROS])
    two_inputs.inputs.append(two_inputs.inputs[0])
    return {
        "raw tensors for other inputs": (infer_request(raw=[ZEROS, ZEROS]), invalid,
                                         "raw_input_contents holds 2 tensors for 1 inputs"),
        "raw FP32 for another shape": (infer_request(raw=[ZEROS[:48000]]), invalid,
                                       "shape [1, 3, 64, 64] needs 12288 values, got 12000"),
        "raw FP32 not whole values": (infer_request(raw=[ZEROS[:-2]]), invalid,
                                      "input 'input': 49150 bytes of FP32 data is not a whole number"),
        "too few FP32 contents": (infer_request(contents=pb.InferTensorContents(fp32_contents=[0.0] * 5)), invalid,
                                  "shape [1, 3, 64, 64] needs 12288 values, got 5"),
        "FP32 wrong shape": (infer_request(shape=(1, 3, 32, 32), raw=[ZEROS[:12288]]), invalid,
                             "FP32 input must have shape [N, 3, 64, 64], got [1, 3, 32, 32]"),
        "wrong datatype": (infer_request("INT8", name="input", raw=[ZEROS]), invalid,
                           "datatype must be FP32 or BYTES, got 'INT8'"),
        "contents and raw data": (infer_request(contents=pb.InferTensorContents(fp32_contents=[0.0]), raw=[ZEROS]),
                                  invalid, "input 'input': send its data once"),
        "no data": (infer_request(), invalid, "input 'input' has no data"),
        "two inputs": (two_inputs, invalid, "send exactly one input"),
        "BYTES length past the end": (infer_request("BYTES", (1,), raw=[(100).to_bytes(4, "little") + b"x" * 9]),
                                      invalid, "input 'image': BYTES element 1 claims 100 bytes, 9 are left"),
        "BYTES not an image": (infer_request("BYTES", (1,), pb.InferTensorContents(bytes_contents=[b"hello"])),
                               invalid, "image 1: not a readable image"),
        "BYTES shape of negative sizes": (
            infer_request("BYTES", (-1,), pb.InferTensorContents(bytes_contents=[b"hello"])), invalid,
            "BYTES input must have a shape of positive sizes, got [-1]"),
        "BYTES fewer files than the shape": (
            infer_request("BYTES", (2,), pb.InferTensorContents(bytes_contents=[b"hello"])), invalid,
            "shape [2] does not match 1 images"),
        "unknown output": (infer_request(raw=[ZEROS], outputs=[
            pb.ModelInferRequest.InferRequestedOutputTensor(name="embedding")]), invalid, "unknown outputs"),
        "unknown model": (infer_request(raw=[ZEROS], model_name="resnet18"), unknown, "unknown model 'resnet18'"),
        "unknown version": (infer_request(raw=[ZEROS], model_version="7"), unknown, "unknown version '7'"),
        # every limit holds here too
        "too many images": (infer_request("BYTES", (65,), pb.InferTensorContents(bytes_contents=[b"x"] * 65)),
                            too_big, "at most 64 images per request"),
        "decompression bomb": (infer_request("BYTES", (1,), pb.InferTensorContents(
            bytes_contents=[png_header(8000, 8000)])), too_big, "image 1: "),
        "over the size limit": (infer_request(raw=[b"\0" * (11 * 2**20)], shape=(1,)), too_big, "SERVER: Received message larger than max"),
    }


@pytest.mark.slow
def test_a_busy_grpc_port_is_one_line_before_start_up(model_file):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "signs_resnet", "serve", "--model", str(model_file),
                                 "--port", "0", "--grpc-port", str(port)], capture_output=True, text=True,
                                timeout=120, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"signs serve: error: cannot listen for gRPC on 127.0.0.1:{port}: "
                                                      "Address already in use")


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_requests_are_status_codes_and_the_server_keeps_serving(stub, server, client, case):
    request, code, reason = bad_requests()[case]
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, timeout=30)
    assert refused.value.code() == code, refused.value
    assert refused.value.details().startswith(reason), refused.value.details()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert probabilities_of(stub.ModelInfer(infer_request(raw=[ZEROS]), timeout=30)).shape == (1, 6)


def test_the_api_key_travels_as_metadata(keyed_server, sample_jpg):
    client = triton.InferenceServerClient(keyed_server.grpc_address)
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([sample_jpg.read_bytes()], dtype=np.object_))
    try:
        assert client.is_server_live() and client.is_model_ready(MODEL)  # health stays open
        with pytest.raises(InferenceServerException, match="missing API key") as refused:
            client.infer(MODEL, [tensor])
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException, match="wrong API key"):
            client.get_model_metadata(MODEL, headers={"x-api-key": "wrong"})
        for headers in ({"x-api-key": API_KEY}, {"authorization": f"Bearer {API_KEY}"}):
            assert client.infer(MODEL, [tensor], headers=headers).as_numpy("probabilities").shape == (1, 6)
    finally:
        client.close()


def counter(text: str, pattern: str) -> float:
    match = re.search("^" + pattern + r" (\S+)", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_grpc_shares_the_batcher_and_the_metrics(triton_client, client, sample_jpg):
    before = client.get("/metrics").text
    tensor = triton.InferInput("input", [3, 3, 64, 64], "FP32")
    tensor.set_data_from_numpy(np.zeros((3, 3, 64, 64), dtype=np.float32))
    triton_client.infer(MODEL, [tensor])
    with pytest.raises(InferenceServerException):
        triton_client.infer("resnet18", [tensor])
    after = client.get("/metrics").text
    ok, not_found = (r'signs_grpc_requests_total\{code="OK",method="ModelInfer"\}',
                     r'signs_grpc_requests_total\{code="NOT_FOUND",method="ModelInfer"\}')
    assert counter(after, ok) == counter(before, ok) + 1
    assert counter(after, not_found) == counter(before, not_found) + 1
    assert counter(after, r"signs_images_total") >= counter(before, r"signs_images_total") + 3  # the same batcher
    assert re.search(r'signs_grpc_request_duration_seconds_count\{method="ModelInfer"\} [1-9]', after)


@pytest.mark.slow
def test_a_full_queue_and_a_timeout_are_unavailable_over_grpc_and_503_over_rest(model_file, sample_jpg, tmp_path):
    blob = sample_jpg.read_bytes()  # a phone photo: decoding takes milliseconds
    request = infer_request("BYTES", (1,), pb.InferTensorContents(bytes_contents=[blob]))
    one_file, one_file_headers = binary_body([files(element(blob))])
    eight_files, eight_files_headers = binary_body([files(element(blob) * 8, shape=(8,))])
    busy = start_server(model_file, tmp_path / "busy.log", "--max-queue", "1", "--max-batch-size", "1",
                        "--max-wait-ms", "0", "--engine", "torch-fp32", env={"SIGNS_DECODE_THREADS": "4"}, grpc=True)
    try:
        with grpc.insecure_channel(busy.grpc_address) as channel:
            busy_stub = pb_grpc.GRPCInferenceServiceStub(channel)

            def one(_) -> grpc.StatusCode:
                try:
                    busy_stub.ModelInfer(request, timeout=60)
                    return grpc.StatusCode.OK
                except grpc.RpcError as error:
                    assert error.code() != grpc.StatusCode.UNAVAILABLE or "retry shortly" in error.details()
                    return error.code()

            def one_rest(_) -> int:
                with busy.client() as rest:
                    response = rest.post(INFER, content=one_file, headers=one_file_headers)
                    assert response.status_code != 503 or response.json()["error"].endswith("retry shortly")
                    return response.status_code

            with ThreadPoolExecutor(16) as pool:
                codes = list(pool.map(one, range(32)))
                statuses = list(pool.map(one_rest, range(32)))
            assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
            assert set(statuses) == {200, 503}, statuses
            assert probabilities_of(busy_stub.ModelInfer(request, timeout=60)).shape == (1, 6)  # and it recovers
    finally:
        busy.stop()
    slow = start_server(model_file, tmp_path / "slow.log", "--request-timeout-s", "0.05", "--engine", "torch-fp32",
                        "--max-batch-size", "2", grpc=True)
    try:
        with grpc.insecure_channel(slow.grpc_address) as channel:
            many = infer_request("BYTES", (8,), pb.InferTensorContents(bytes_contents=[blob] * 8))
            with pytest.raises(grpc.RpcError) as late:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(many, timeout=60)
            assert late.value.code() == grpc.StatusCode.UNAVAILABLE
            assert late.value.details().startswith("no answer within 0.05 s")
        with slow.client() as rest:
            response = rest.post(INFER, content=eight_files, headers=eight_files_headers)
            assert response.status_code == 503 and response.json()["error"].startswith("no answer within 0.05 s")
    finally:
        slow.stop()
