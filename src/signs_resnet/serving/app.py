"""The HTTP API: the original /predict, done right; the FastAPI app and its routes.

The original's three parts are all here: `load_model` (model_file.py, once, at start-up by
runtime.start_engine), `prepare_image` (the very function training uses, data/preprocess.py; `prepare` is
it with where the hand was found) and `predict` (the route, `predict_route`, answering from the batched
forward pass, batching.py, through the answer's one rule, answer.py). A request flows (photos.py, the path
/stream's frames take too):

    upload -> prepare: the hand found and cut out (decoding thread) -> Batcher queue
           -> forward_batch (inference thread) -> answer.decide -> probabilities, sorted, as JSON

The event loop only parses HTTP and moves bytes. What is refused before any work is done (oversized
headers and bodies, slow requests, a missing API key) is in guards.py; every refusal is a JSON error
(errors.py). Also served: /healthz, /readyz, /metrics (Prometheus, metrics.py), /docs (Swagger UI from
the package's own files: no request leaves the machine), the web page at /, the Open Inference Protocol
(KServe v2) over REST under /v2 (kserve.py) and, with a grpc_port, over gRPC (grpc_service.py), and a
live camera's frames over a WebSocket at /stream (stream.py). runner.py starts it all under uvicorn.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route, WebSocketRoute
from swagger_ui_bundle import swagger_ui_path

from signs_resnet import __version__
from signs_resnet.inference.engines import Engine
from signs_resnet.serving import kserve
from signs_resnet.serving.errors import HTTP_CODES, ApiError, error_response
from signs_resnet.serving.guards import LimitBody, RequestTimeout, api_key_check, bearer_token, check_api_key
from signs_resnet.serving.metrics import Observe
from signs_resnet.serving.photos import classify_photos
from signs_resnet.serving.runtime import AppRuntime, Runtime
from signs_resnet.serving.schemas import ErrorResponse, Health, PredictResponse, Readiness
from signs_resnet.serving.settings import ServeSettings
from signs_resnet.serving.stream import stream_route
from signs_resnet.serving.uploads import image_uploads, multipart_boundary


class PlainRoute(Route):
    """A Starlette route that, like FastAPI's, tells the middleware which route it is (scope["route"]),
    so that Observe counts its requests under its path."""

    def matches(self, scope: dict[str, Any]) -> tuple[Match, dict[str, Any]]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def _static_page() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


_FLAGS = {word: value for value, words in ((True, ("true", "t", "yes", "y", "on", "1")),
                                           (False, ("false", "f", "no", "n", "off", "0"))) for word in words}


def _query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, read as FastAPI reads one (the words of _FLAGS, any case); absent: false."""
    raw = request.query_params.get(name, "false")
    if raw.lower() not in _FLAGS:
        raise ApiError(400, "invalid_request", f"query.{name}: {raw!r} is not a boolean (true or false)")
    return _FLAGS[raw.lower()]


PREDICT_DOCS = {
    "parameters": [{"name": "include_image", "in": "query", "required": False,
                    "schema": {"type": "boolean", "default": False},
                    "description": "also return the 64x64 image the model saw, as a PNG data URL"}],
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "one or more image files (JPEG, PNG, ...), field name `image`"}},
        }}},
    }
}
ERRORS = {status: {"model": ErrorResponse} for status in (400, 408, 413, 415, 503)}


async def predict_route(request: Request) -> JSONResponse:
    """Classify one or more images uploaded as multipart field `image` (the original's curl call).

    With `include_image=true` each result also carries the 64x64 image the model saw, as a PNG.
    """
    started = time.perf_counter()
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    if settings.api_key:
        check_api_key(settings.api_key, request.headers.get("x-api-key"),
                      bearer_token(request.headers.get("authorization")))
    include_image = _query_flag(request, "include_image")
    runtime.ready_batcher().check_capacity()  # before reading the upload
    boundary = multipart_boundary(request.headers.get("content-type", ""))
    uploads = image_uploads(boundary, await request.body(), settings.max_images)
    results, result, decode_seconds = await classify_photos(runtime, uploads, include_image)
    results = [{"filename": name} | answer for (name, _), answer in zip(uploads, results)]
    body: dict[str, Any] = {"success": True}
    if len(results) == 1:
        body["predictions"] = results[0]["predictions"]
    body |= {
        "results": results,
        "model": runtime.info_json,
        "timing": {"decode_ms": round(decode_seconds * 1000, 3), "queue_ms": round(result.queue_seconds * 1000, 3),
                   "inference_ms": round(result.inference_seconds * 1000, 3),
                   "total_ms": round((time.perf_counter() - started) * 1000, 3), "batch_size": result.batch_size},
    }
    return JSONResponse(body)


router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_static_page())


DOCS_ASSETS = "/docs/assets"  # Swagger UI's files, from the swagger-ui-bundle-v2 package


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs_page(request: Request) -> HTMLResponse:
    """Swagger UI, self-hosted as FastAPI documents it (docs_url=None plus this route): its script, style
    and icon come from DOCS_ASSETS, and the online validator badge is off, so the page works offline."""
    return get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - API",
                               swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
                               swagger_ui_parameters={"validatorUrl": None})


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """Alive: the process answers HTTP."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(runtime: AppRuntime):
    """Ready: the model is loaded and warmed up (503 before)."""
    if not runtime.ready:
        return JSONResponse({"ready": False}, 503)
    return {"ready": True, "model": runtime.info}


@router.get("/metrics", response_class=Response)
async def metrics_route(runtime: AppRuntime) -> Response:
    """Prometheus metrics."""
    return Response(runtime.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The FastAPI application serving `engine` (else the model loads at start-up); it warms up in the
    background, and /readyz answers 200 once it has."""
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start(engine)
        grpc_server = None
        try:
            if settings.grpc_port:
                from signs_resnet.serving.grpc_service import (
                    start_grpc_server,  # here: the HTTP-only server never loads grpc
                )

                grpc_server = await start_grpc_server(runtime)
            yield
        finally:
            if grpc_server:
                await grpc_server.stop(settings.request_timeout_s)
            await runtime.stop()

    app = FastAPI(title="SIGNS hand-sign classifier", version=__version__, lifespan=lifespan,
                  description="ResNet50 on the SIGNS hand signs (digits 0-5). The original `/predict`, plus "
                              "the Open Inference Protocol (KServe v2) under `/v2`.",
                  docs_url=None, redoc_url=None,  # /docs: docs_page, served offline; ReDoc would need a CDN
                  # our metrics are Prometheus; FastAPI's OpenTelemetry hooks cost time on every request
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})
    app.state.runtime = runtime
    # outermost last: Observe sees every answer; CORS headers go on errors too (browsers can read them)
    app.add_middleware(LimitBody, limit=settings.max_upload_bytes)
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_s)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)
    app.add_middleware(Observe, metrics=runtime.metrics)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    protected = [Depends(api_key_check(settings.api_key))] if settings.api_key else []
    # The hot path is a plain Starlette route, first in the list: FastAPI's per-request parameter solving and
    # Starlette's form parsing (see uploads.py) cost a fifth of the event loop's time per small upload
    # (docs/performance.md, "The /predict route"). FastAPI still documents it, from the same function.
    app.router.routes.insert(0, PlainRoute("/predict", predict_route, methods=["POST"]))
    errors = ERRORS | ({401: {"model": ErrorResponse}} if settings.api_key else {})
    documented = [APIRoute("/predict", predict_route, methods=["POST"], response_model=PredictResponse,
                           response_model_exclude_none=True, openapi_extra=PREDICT_DOCS, responses=errors,
                           dependencies=protected)]
    app.include_router(router)
    app.router.routes.append(WebSocketRoute("/stream", stream_route))
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.include_router(kserve.health_router)
    app.include_router(kserve.model_router, dependencies=protected)
    app.openapi = lambda: _openapi_schema(app, documented)
    return app


async def _api_error(request: Request, error: ApiError):
    return error_response(error.status, error.code, error.message, request.url.path, error.headers)


async def _http_error(request: Request, error: StarletteHTTPException):
    code = HTTP_CODES.get(error.status_code, "error")
    return error_response(error.status_code, code, str(error.detail), request.url.path,
                          getattr(error, "headers", None))


async def _validation_error(request: Request, error: RequestValidationError):
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return error_response(400, "invalid_request", message, request.url.path)


def _openapi_schema(app: FastAPI, documented: list[APIRoute]) -> dict[str, Any]:
    """FastAPI's schema of the app's routes and of `documented` (routes served by plain Starlette routes),
    plus the v2 infer request model, which that route parses itself (off the event loop)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=[*app.routes, *documented])
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(kserve.request_schemas())
    app.openapi_schema = schema
    return schema
