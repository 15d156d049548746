"""The Open Inference Protocol over gRPC: the GRPCInferenceService, on its own port
(`--grpc-port`), served in the HTTP server's process and event loop from the same typed Runtime, so
both share the batcher, decoding threads, readiness, limits, API key and metrics.

    ServerLive, ServerReady, ServerMetadata, ModelReady    open, as /v2/health and /v2 are
    ModelMetadata, ModelInfer                              behind the API key when one is set: metadata
                                                           `x-api-key: KEY` or `authorization: Bearer KEY`

ModelInfer reads its input from `contents` (fp32_contents, or bytes_contents holding image files) or
from `raw_input_contents`, and tensors.py checks and prepares it exactly as for REST. Outputs go back
in `raw_output_contents`, as Triton answers (its Python client reads FP32 outputs only from there).
Errors carry REST's messages, with the status code of their HTTP status (STATUS_CODES). A message over
max_upload_bytes is refused by gRPC itself (RESOURCE_EXHAUSTED); an answer not ready within
request_timeout_s is UNAVAILABLE, as REST's 503.

The service's messages and stubs are the code Triton's client package ships (tritonclient.grpc), generated
from Triton's grpc_service.proto: KServe v2's service and messages (package `inference`), plus Triton's own
RPCs, which answer UNIMPLEMENTED here. Using the published package keeps the wire format theirs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from signs_resnet import __version__
from signs_resnet.serving import tensors
from signs_resnet.serving.errors import ApiError
from signs_resnet.serving.guards import bearer_token, check_api_key
from signs_resnet.serving.runtime import Runtime
from signs_resnet.serving.tensors import InputTensor

log = logging.getLogger(__name__)

STATUS_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
                413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
                503: grpc.StatusCode.UNAVAILABLE}


def rpc(protected: bool):
    """Wrap an RPC: the API key first (when `protected` and one is set), ApiError as its status code,
    anything unexpected logged and answered INTERNAL, and every call counted and timed in the metrics."""

    def wrap(method):
        @functools.wraps(method)
        async def handler(self: InferenceService, request, context: grpc.aio.ServicerContext):
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                if protected and self.runtime.settings.api_key:
                    metadata = {key: value for key, value in context.invocation_metadata() or ()}
                    check_api_key(self.runtime.settings.api_key, metadata.get("x-api-key"),
                                  bearer_token(metadata.get("authorization")))
                return await method(self, request, context)
            except ApiError as error:
                code = STATUS_CODES.get(error.status, grpc.StatusCode.UNKNOWN)
                await context.abort(code, error.message)
            except asyncio.CancelledError:  # the client went away or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                log.exception("unexpected error in gRPC %s", method.__name__)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, "internal server error")
            finally:
                metrics = self.runtime.metrics
                metrics.grpc_requests.labels(method.__name__, code.name).inc()
                metrics.grpc_latency.labels(method.__name__).observe(time.perf_counter() - started)

        return handler

    return wrap


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over the Runtime."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @rpc(protected=False)
    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc(protected=False)
    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.runtime.ready)

    @rpc(protected=False)
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="signs-resnet", version=__version__)

    @rpc(protected=False)
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.runtime.ready)

    @rpc(protected=True)
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        self._check_model(request.name, request.version)
        engine = self.runtime.ready_engine()
        metadata = tensors.model_metadata(engine)
        return pb.ModelMetadataResponse(name=request.name, versions=[engine.model.checksum[:12]],
                                        platform=engine.describe(), inputs=metadata["inputs"],
                                        outputs=metadata["outputs"])

    @rpc(protected=True)
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        runtime = self.runtime
        self._check_model(request.model_name, request.model_version)
        engine = runtime.ready_engine()
        requested = [output.name for output in request.outputs]
        tensors.check_outputs(requested)
        # the shapes say how many images are coming (for the early capacity check); the data is read off the loop
        shapes = [InputTensor(tensor.name, tensor.datatype, list(tensor.shape)) for tensor in request.inputs]
        count = min(tensors.claimed_images(shapes), runtime.settings.max_images)

        def prepare():
            return tensors.images_of(_inputs_of(request), engine, runtime.settings)

        try:
            framings, result, _ = await asyncio.wait_for(runtime.classify(prepare, count), runtime.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, "timeout", f"no answer within {runtime.settings.request_timeout_s:g} s: the server "
                                           "is busy; retry shortly") from None
        outputs = tensors.output_tensors(result.probabilities, engine.model, requested, framings)
        return pb.ModelInferResponse(
            model_name=request.model_name, model_version=engine.model.checksum[:12], id=request.id,
            outputs=[pb.ModelInferResponse.InferOutputTensor(name=o.name, datatype=o.datatype, shape=o.shape)
                     for o in outputs],
            raw_output_contents=[output.raw() for output in outputs])

    def _check_model(self, name: str, version: str) -> None:
        served = self.runtime.settings.model_name
        if name != served:
            raise ApiError(404, "unknown_model", f"unknown model {name!r}; this server serves {served!r}")
        engine = self.runtime.engine
        if version and engine is not None and version != engine.model.checksum[:12]:
            raise ApiError(404, "unknown_version", f"unknown version {version!r} of {name!r}; this server serves "
                                                   f"version {engine.model.checksum[:12]!r}")


def _inputs_of(request: pb.ModelInferRequest) -> list[InputTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ApiError(400, "invalid_request", f"raw_input_contents holds {len(raw)} tensors for "
                                               f"{len(request.inputs)} inputs")
    inputs = []
    for index, tensor in enumerate(request.inputs):
        contents = {"FP32": tensor.contents.fp32_contents, "BYTES": tensor.contents.bytes_contents}.get(tensor.datatype)
        data = list(contents) if contents else None
        inputs.append(InputTensor(tensor.name, tensor.datatype, list(tensor.shape), data,
                                  raw[index] if raw else None))
    return inputs


async def start_grpc_server(runtime: Runtime) -> grpc.aio.Server:
    """Listen for gRPC on the settings' host and grpc_port, on the running event loop."""
    settings = runtime.settings
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", settings.max_upload_bytes),
        # several worker processes share the port, as uvicorn's workers share HTTP's; one process never
        # shares it by accident with another server
        ("grpc.so_reuseport", int(settings.workers > 1)),
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(runtime), server)
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else \
        f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {address}: {error}") from None
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server
