"""The Open Inference Protocol (KServe v2) over REST, as KServe's and Triton's clients speak it.

    GET  /v2/health/live, /v2/health/ready      the server
    GET  /v2/models/<name>, .../ready            the model: inputs, outputs, classes, max_images
         (each also as /v2/models/<name>/versions/<version>/..., the version the model checksum's first 12 digits)
    POST /v2/models/<name>/infer                 one input, "input" FP32 [N, 3, 64, 64] or "image" BYTES [N]
      -> "probabilities" FP32 [N, classes], "label" BYTES [N], "confident" BOOL [N], "network" FP32 [N, classes],
         "hand_counts" FP32 [N, 6]   (tensors.py: what they hold)

An infer body is JSON (with or without a JSON Content-Type), or, with the binary tensor data extension,
JSON of `Inference-Header-Content-Length` bytes followed by each input's data in binary form (in input
order, `parameters.binary_data_size` bytes each: FP32 as 4-byte floats, BYTES as length-prefixed image
files). Outputs asked for with `parameters.binary_data` (or all of them, with the request's
`parameters.binary_data_output`) come back the same way. In JSON, BYTES image files are base64 strings.

Two routers, included by app.create_app: `health_router` (open to probes) and `model_router`
(metadata and inference, behind the API key when one is set); both read the app's typed Runtime.
Requests share the /predict batcher. Errors follow the protocol: {"error": "message"}.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from signs_resnet import __version__
from signs_resnet.serving import tensors
from signs_resnet.serving.errors import ApiError
from signs_resnet.serving.runtime import AppRuntime, Runtime
from signs_resnet.serving.tensors import InputTensor

HEADER_LENGTH = "inference-header-content-length"
MEDIA_TYPES = ("application/json", "application/octet-stream")  # or none: the protocol needs no Content-Type


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] = Field(description="classes (the label of each probability column), checksum, "
                                                   "max_images (per request)")


class V2InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="FP32: numbers, flat (row-major) or nested; BYTES: "
                                                     "base64-encoded images. Absent when parameters.binary_data_size "
                                                     "says how many bytes after the JSON hold it")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2InferInput]
    outputs: list[V2RequestedOutput] | None = None


class V2InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size, for an output in binary form")
    data: list[Any] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2InferOutput]


class V2Error(BaseModel):
    error: str


health_router = APIRouter()  # open to probes
model_router = APIRouter()  # the model's metadata and inference: behind the API key when one is set


def _check_name(runtime: Runtime, model_name: str, model_version: str | None = None) -> None:
    if model_name != runtime.settings.model_name:
        raise ApiError(404, "unknown_model", f"unknown model {model_name!r}; "
                                             f"this server serves {runtime.settings.model_name!r}")
    served = runtime.engine.model.checksum[:12] if runtime.engine else None
    if model_version is not None and served is not None and model_version != served:
        raise ApiError(404, "unknown_version", f"unknown version {model_version!r} of {model_name!r}; this server "
                                               f"serves version {served!r}")


@health_router.get("/v2", response_model=V2ServerMetadata)
async def v2_server() -> dict[str, Any]:
    return {"name": "signs-resnet", "version": __version__, "extensions": ["binary_tensor_data"]}


@health_router.get("/v2/health/live", response_model=V2Live)
async def v2_live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("/v2/health/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def v2_ready(runtime: AppRuntime):
    return {"ready": True} if runtime.ready else JSONResponse({"ready": False}, 503)


@health_router.get("/v2/models/{model_name}/ready", response_model=V2ModelReady,
                   responses={503: {"model": V2ModelReady}})
@health_router.get("/v2/models/{model_name}/versions/{model_version}/ready", response_model=V2ModelReady,
                   responses={503: {"model": V2ModelReady}})
async def v2_model_ready(model_name: str, runtime: AppRuntime, model_version: str | None = None):
    _check_name(runtime, model_name, model_version)
    body = {"name": model_name, "ready": runtime.ready}
    return body if runtime.ready else JSONResponse(body, 503)


@model_router.get("/v2/models/{model_name}", response_model=V2ModelMetadata, responses={404: {"model": V2Error}})
@model_router.get("/v2/models/{model_name}/versions/{model_version}", response_model=V2ModelMetadata,
                  responses={404: {"model": V2Error}})
async def v2_metadata(model_name: str, runtime: AppRuntime, model_version: str | None = None) -> dict[str, Any]:
    _check_name(runtime, model_name, model_version)
    engine = runtime.ready_engine()
    return {
        "name": model_name, "versions": [engine.model.checksum[:12]], "platform": engine.describe(),
        **tensors.model_metadata(engine),
        "parameters": {"classes": engine.model.classes, "checksum": engine.model.checksum,
                       "max_images": runtime.settings.max_images,
                       "confidence_threshold": engine.model.confidence_threshold,
                       "input": "use one: 'input' (FP32 images scaled to [0, 1]) or 'image' (image files)"},
    }


INFER_DOCS = {"response_model": V2InferResponse, "response_model_exclude_none": True,
              "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/V2InferRequest"}}}}},
              "responses": {status: {"model": V2Error} for status in (400, 401, 404, 408, 413, 415, 503)}}


@model_router.post("/v2/models/{model_name}/infer", **INFER_DOCS)
@model_router.post("/v2/models/{model_name}/versions/{model_version}/infer", **INFER_DOCS)
async def v2_infer(model_name: str, request: Request, runtime: AppRuntime, model_version: str | None = None) -> Response:
    _check_name(runtime, model_name, model_version)
    _check_media_type(request)
    runtime.ready_batcher().check_capacity()  # before reading the body
    header_length = request.headers.get(HEADER_LENGTH)
    body = await request.body()
    engine = runtime.ready_engine()

    def prepare():
        payload, inputs, binary_outputs = read_request(body, header_length)
        images, framings = tensors.images_of(inputs, engine, runtime.settings)
        return images, (payload, binary_outputs, framings)

    (payload, binary_outputs, framings), result, _ = await runtime.classify(prepare, 1)
    outputs = tensors.output_tensors(result.probabilities, engine.model,
                                     [o.name for o in payload.outputs or []], framings)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": engine.model.checksum[:12]}
    if payload.id is not None:
        answer["id"] = payload.id
    answer["outputs"], binaries = [], []
    for output in outputs:
        entry: dict[str, Any] = {"name": output.name, "shape": output.shape, "datatype": output.datatype}
        if binary_outputs(output.name):
            binaries.append(output.raw())
            entry["parameters"] = {"binary_data_size": len(binaries[-1])}
        else:
            entry["data"] = output.values
        answer["outputs"].append(entry)
    if not binaries:
        return JSONResponse(answer)
    header = json.dumps(answer, separators=(",", ":")).encode()
    return Response(header + b"".join(binaries), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


def _check_media_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type not in MEDIA_TYPES:
        raise ApiError(415, "unsupported_media_type", "send an Open Inference Protocol body: JSON "
                       "(Content-Type: application/json, or none), optionally followed by binary tensor data "
                       f"(Inference-Header-Content-Length); got {media_type}")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(415, "unsupported_media_type", f"send the body uncompressed (Content-Encoding {encoding} "
                                                      "is not supported)")


def read_request(body: bytes, header_length: str | None):
    """An infer body as (the JSON request, its inputs as tensors, whether each output goes back in binary
    form); ApiError 400 for anything malformed. Runs in a decoding thread: a big JSON tensor takes a while."""
    json_part, binary = _split_body(body, header_length)
    try:
        payload = V2InferRequest.model_validate_json(json_part)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors())
        where = f" (the first {len(json_part)} bytes, by Inference-Header-Content-Length)" if header_length else ""
        raise ApiError(400, "invalid_request", f"not an inference request{where}: {problems}") from None
    tensors.check_outputs([o.name for o in payload.outputs or []])
    inputs, offset = [], 0
    for tensor in payload.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ApiError(400, "invalid_request", f"input {tensor.name!r}: binary_data_size must be a whole "
                                                       f"number of bytes, got {size!r}")
            if offset + size > len(binary):
                raise ApiError(400, "invalid_request", f"input {tensor.name!r}: binary_data_size {size} runs past "
                                                       f"the end of the body ({len(binary) - offset} bytes of binary "
                                                       "data left)")
            raw, offset = binary[offset:offset + size], offset + size
        inputs.append(InputTensor(tensor.name, tensor.datatype, tensor.shape, tensor.data, raw))
    if offset != len(binary):
        raise ApiError(400, "invalid_request", f"{len(binary)} bytes of binary data follow the JSON header, but the "
                                               f"inputs' binary_data_size add up to {offset}")
    return payload, inputs, _binary_outputs(payload)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(the JSON header, the binary data after it)."""
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()):
        raise ApiError(400, "invalid_request", f"Inference-Header-Content-Length must be a number of bytes, "
                                               f"got {header_length!r}")
    length = int(header_length)
    if length > len(body):
        raise ApiError(400, "invalid_request", f"Inference-Header-Content-Length is {length}, but the body has "
                                               f"{len(body)} bytes")
    return body[:length], body[length:]


def _binary_outputs(payload: V2InferRequest):
    """Whether an output goes back in binary form: its own `binary_data`, else the request's
    `binary_data_output`, else not."""
    def flag(parameters: dict[str, Any] | None, name: str, default: bool) -> bool:
        value = (parameters or {}).get(name, default)
        if not isinstance(value, bool):
            raise ApiError(400, "invalid_request", f"parameter {name} must be true or false, got {value!r}")
        return value

    default = flag(payload.parameters, "binary_data_output", False)
    chosen = {o.name: flag(o.parameters, "binary_data", default) for o in payload.outputs or []}
    return lambda name: chosen.get(name, default)


def request_schemas() -> dict[str, Any]:
    """OpenAPI component schemas of the infer request, which v2_infer parses itself (off the event loop),
    so FastAPI does not see it."""
    infer = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return infer.pop("$defs", {}) | {"V2InferRequest": infer}
