"""The Open Inference Protocol (KServe v2 REST), so existing KServe and Triton clients work.

    GET  /v2/health/live, /v2/health/ready      the server
    GET  /v2/models/<name>, .../ready            the model: inputs, outputs, classes
    POST /v2/models/<name>/infer                 one input, either
         "input" FP32 [N, 3, 64, 64]: images already prepared (data.prepare_image: RGB scaled to [0, 1])
         "image" BYTES [N]: base64-encoded image files, prepared here exactly as /predict does
      -> "probabilities" FP32 [N, classes], "label" BYTES [N] and "confident" BOOL [N] (the top probability
         reaches the model's confidence threshold)

Two routers, included by serve.create_app: `health_router` (open to probes) and `model_router`
(metadata and inference, behind the API key when one is set); both read the app's typed Runtime.
Requests share the /predict batcher. Errors follow the protocol: {"error": "message"}.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from . import __version__
from .data import ImageError, prepare_image
from .errors import ApiError
from .predict import LoadedModel
from .runtime import AppRuntime, Runtime, decode_error
from .settings import ServeSettings

OUTPUTS = ("probabilities", "label", "confident")


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
    parameters: dict[str, Any] = Field(description="classes (the label of each probability column), checksum")


class V2InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="FP32: numbers, flat (row-major) or nested; BYTES: base64-encoded images")


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
    data: list[Any]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2InferOutput]


class V2Error(BaseModel):
    error: str


health_router = APIRouter()  # open to probes
model_router = APIRouter()  # the model's metadata and inference: behind the API key when one is set


def _check_name(runtime: Runtime, model_name: str) -> None:
    if model_name != runtime.settings.model_name:
        raise ApiError(404, "unknown_model", f"unknown model {model_name!r}; "
                                             f"this server serves {runtime.settings.model_name!r}")


@health_router.get("/v2", response_model=V2ServerMetadata)
async def v2_server() -> dict[str, Any]:
    return {"name": "signs-resnet", "version": __version__, "extensions": []}


@health_router.get("/v2/health/live", response_model=V2Live)
async def v2_live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("/v2/health/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def v2_ready(runtime: AppRuntime):
    return {"ready": True} if runtime.ready else JSONResponse({"ready": False}, 503)


@health_router.get("/v2/models/{model_name}/ready", response_model=V2ModelReady,
                   responses={503: {"model": V2ModelReady}})
async def v2_model_ready(model_name: str, runtime: AppRuntime):
    _check_name(runtime, model_name)
    body = {"name": model_name, "ready": runtime.ready}
    return body if runtime.ready else JSONResponse(body, 503)


@model_router.get("/v2/models/{model_name}", response_model=V2ModelMetadata, responses={404: {"model": V2Error}})
async def v2_metadata(model_name: str, runtime: AppRuntime) -> dict[str, Any]:
    _check_name(runtime, model_name)
    engine = runtime.ready_engine()
    height, width, channels = engine.model.input_shape
    return {
        "name": model_name, "versions": [engine.model.checksum[:12]], "platform": engine.describe(),
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, channels, height, width]},
                   {"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(engine.model.classes)]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "confident", "datatype": "BOOL", "shape": [-1]}],
        "parameters": {"classes": engine.model.classes, "checksum": engine.model.checksum,
                       "confidence_threshold": engine.model.confidence_threshold,
                       "input": "use one: 'input' (FP32 images scaled to [0, 1]) or 'image' (base64 files)"},
    }


@model_router.post("/v2/models/{model_name}/infer", response_model=V2InferResponse, response_model_exclude_none=True,
                   openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/V2InferRequest"}}}}},
                   responses={status: {"model": V2Error} for status in (400, 401, 404, 408, 413, 503)})
async def v2_infer(model_name: str, request: Request, runtime: AppRuntime) -> dict[str, Any]:
    _check_name(runtime, model_name)
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send an Open Inference Protocol JSON body "
                                                      "(Content-Type: application/json)")
    body = await request.body()
    engine = runtime.ready_engine()
    payload, result, _ = await runtime.classify(lambda: inputs_of(body, engine.model, runtime.settings), 1)
    rows = result.probabilities
    outputs = []
    for output in [o.name for o in payload.outputs] if payload.outputs else OUTPUTS:
        if output == "probabilities":
            outputs.append({"name": output, "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                            "data": [value for row in rows for value in row]})
        elif output == "label":
            labels = [engine.model.classes[max(range(len(row)), key=row.__getitem__)] for row in rows]
            outputs.append({"name": output, "datatype": "BYTES", "shape": [len(labels)], "data": labels})
        else:
            confident = [max(row) >= engine.model.confidence_threshold for row in rows]
            outputs.append({"name": output, "datatype": "BOOL", "shape": [len(confident)], "data": confident})
    return {"model_name": model_name, "model_version": engine.model.checksum[:12], "id": payload.id,
            "outputs": outputs}


def inputs_of(body: bytes, model: LoadedModel, settings: ServeSettings) -> tuple[torch.Tensor, V2InferRequest]:
    """Parse and check an infer request: (prepared images, the request). Runs in a worker thread: a big
    tensor takes a while to parse."""
    try:
        payload = V2InferRequest.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors())
        raise ApiError(400, "invalid_request", f"not an inference request: {problems}") from None
    unknown = [o.name for o in payload.outputs or [] if o.name not in OUTPUTS]
    if unknown:
        raise ApiError(400, "unknown_output", f"unknown outputs {unknown}; outputs: {', '.join(OUTPUTS)}")
    if len(payload.inputs) != 1:
        raise ApiError(400, "invalid_request", "send exactly one input: 'input' (FP32) or 'image' (BYTES)")
    tensor = payload.inputs[0]
    height, width, channels = model.input_shape
    if tensor.datatype == "FP32":
        expected = [channels, height, width]
        if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] < 1:
            raise ApiError(400, "invalid_shape", f"FP32 input must have shape [N, {channels}, {height}, {width}], "
                                                 f"got {tensor.shape}")
        if tensor.shape[0] > settings.max_images:
            raise ApiError(413, "too_many_images", f"at most {settings.max_images} images per request")
        try:
            values = np.asarray(tensor.data, dtype=np.float32)
        except (ValueError, TypeError):
            raise ApiError(400, "invalid_data", "FP32 data must be numbers (flat or nested lists)") from None
        if values.size != math.prod(tensor.shape):
            raise ApiError(400, "invalid_shape", f"shape {tensor.shape} needs {math.prod(tensor.shape)} values, "
                                                 f"got {values.size}")
        if not np.isfinite(values).all():
            raise ApiError(400, "invalid_data", "FP32 data must be finite numbers")
        return torch.from_numpy(values.reshape(tensor.shape).copy()), payload
    if tensor.datatype == "BYTES":
        if len(tensor.data) != math.prod(tensor.shape) or not tensor.data:
            raise ApiError(400, "invalid_shape", f"shape {tensor.shape} does not match {len(tensor.data)} images")
        if len(tensor.data) > settings.max_images:
            raise ApiError(413, "too_many_images", f"at most {settings.max_images} images per request")
        images = []
        for index, item in enumerate(tensor.data):
            try:
                blob = base64.b64decode(item, validate=True) if isinstance(item, str) else None
            except (binascii.Error, ValueError):
                blob = None
            if not blob:
                raise ApiError(400, "invalid_data", f"image {index + 1}: BYTES data must be a base64-encoded image")
            try:
                images.append(prepare_image(blob, height, settings.max_pixels))
            except ImageError as error:
                raise decode_error(index, None, error) from None
        return torch.stack(images), payload
    raise ApiError(400, "invalid_datatype", f"datatype must be FP32 or BYTES, got {tensor.datatype!r}")


def request_schemas() -> dict[str, Any]:
    """OpenAPI component schemas of the infer request, which v2_infer parses itself (off the event loop),
    so FastAPI does not see it."""
    infer = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return infer.pop("$defs", {}) | {"V2InferRequest": infer}
