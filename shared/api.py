"""HTTP routes and error responses: the Azure OpenAI images contract, archived.

Bodies are read and checked by hand (size cap, content type, strict UTF-8,
strict JSON) rather than by FastAPI's model binding, so every refusal has the
Azure error shape, names the parameter, and happens before anything goes upstream.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.archive import is_archive_path, is_safe_id
from shared.errors import ServiceError, invalid
from shared.jobs import new_job_id
from shared.models import ImageRequest, parse_request
from shared.runtime import Runtime
from shared.service import new_generation_id, sync_prefix

log = logging.getLogger(__name__)

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

GENERATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "description": "1-4000 characters (dall-e-3) or 1-32000 (gpt-image)."},
        "size": {"type": "string", "examples": ["1024x1024", "1536x1024", "auto"]},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "quality": {"type": "string", "enum": ["standard", "hd", "low", "medium", "high", "auto"]},
        "style": {"type": "string", "enum": ["vivid", "natural"], "description": "dall-e-3; dropped for gpt-image."},
        "response_format": {"type": "string", "enum": ["url", "b64_json"], "description": "What this service returns; url links to the archived copy."},
        "output_format": {"type": "string", "enum": ["png", "jpeg"]},
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
        "background": {"type": "string", "enum": ["auto", "opaque", "transparent"]},
        "moderation": {"type": "string", "enum": ["auto", "low"]},
        "user": {"type": "string"},
        "model": {"type": "string", "description": "Deployment name (v1 path)."},
    },
}
_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": GENERATION_SCHEMA}}}}
_ERRORS_DOC = {
    str(status): {"description": text, "content": {"application/json": {"example": {"error": {"code": "...", "message": "...", "param": "..."}}}}}
    for status, text in [
        (400, "Invalid request or content filtered"),
        (404, "Unknown deployment"),
        (413, "Body too large"),
        (415, "Body is not JSON"),
        (429, "Upstream throttling; see Retry-After"),
        (502, "Upstream failure"),
        (503, "Storage or credential unavailable"),
        (504, "Upstream timeout"),
    ]
}


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON value, or a ServiceError (415, 413, 400) naming what is wrong."""
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        raise ServiceError(415, "unsupported_media_type", f"Content-Type must be application/json, got {content_type or 'none'!r}.")
    charset = re.search(r"charset=\"?([\w-]+)", params, re.IGNORECASE)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise ServiceError(415, "unsupported_media_type", f"The body must be UTF-8, got charset {charset.group(1)!r}.")
    too_large = ServiceError(413, "request_too_large", f"The request body is larger than {max_bytes} bytes.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(None, f"The body is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError as exc:
        raise invalid(None, f"The body is not valid JSON: {exc}", "invalid_json") from None


def create_app(runtime: Runtime, *, owns_runtime: bool = True) -> FastAPI:
    """The HTTP API over ``runtime``. Its lifespan opens the runtime, and closes it when the app owns it
    (not in Azure, where the queue trigger shares it and shutdown runs in another event loop)."""
    settings = runtime.settings
    image_service = runtime.service
    job_service = runtime.jobs

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.open()
        yield
        if owns_runtime:
            await runtime.close()

    app = FastAPI(
        title="Image generation with archive",
        version="0.1.0",
        description="Azure OpenAI images API in front of your deployments; every image archived to your Blob Storage.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.exception_handler(ServiceError)
    async def on_service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, str(exc.status_code))
        message = "Resource not found." if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(invalid(param, str(first.get("msg", "Invalid request."))))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            {"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}},
            status_code=500,
        )

    def family_for(deployment: str, param: str | None) -> str:
        family = settings.family_of(deployment)
        if family is None:
            raise ServiceError(
                404,
                "DeploymentNotFound",
                f"The deployment {deployment!r} is not served here. Known deployments: {', '.join(sorted(settings.deployments))}.",
                param=param,
            )
        return family

    async def submit(request: Request, image_request: ImageRequest, body: dict[str, Any]) -> JSONResponse:
        """Record and enqueue a checked request: 202 with Operation-Location."""
        key = request.headers.get("idempotency-key")
        if key is not None and not is_safe_id(key):
            raise invalid("Idempotency-Key", "Idempotency-Key must be 1-64 letters, digits, '-' or '_'.")
        job_id = key or new_job_id()
        queued = {k: v for k, v in body.items() if k != "model"}
        job, created = await job_service.submit(job_id, image_request.deployment, queued)
        if not created and (job.get("request") != queued or job.get("deployment") != image_request.deployment):
            raise ServiceError(
                409, "IdempotencyKeyReused", "This Idempotency-Key was used for a different request; use a new key.", param="Idempotency-Key"
            )
        location = str(request.url_for("operation_status", job_id=job_id).include_query_params(**{"api-version": request.query_params.get("api-version", settings.api_version)}))
        return JSONResponse(
            {"id": job_id, "status": job["status"]},
            status_code=202,
            headers={"Operation-Location": location, "Retry-After": "5"},
        )

    def wants_async(request: Request) -> bool:
        prefer = request.headers.get("prefer", "")
        return any(p.strip().lower() == "respond-async" for p in prefer.split(","))

    async def generate_sync(request: ImageRequest) -> JSONResponse:
        generation_id = new_generation_id()
        generation = await image_service.generate(
            request,
            generation_id=generation_id,
            prefix=sync_prefix(),
            timeout=settings.sync_timeout_seconds,
            budget=settings.retry_budget_seconds,
        )
        body = await image_service.response_body(generation)
        return JSONResponse(body, headers={"x-request-id": generation_id})

    @app.post(
        "/openai/deployments/{deployment}/images/generations",
        summary="Generate images (Azure deployment-scoped path)",
        openapi_extra={**_BODY_DOC, "responses": _ERRORS_DOC},
    )
    async def generate_deployment(deployment: str, request: Request) -> Response:
        api_version = request.query_params.get("api-version")
        if not api_version:
            raise invalid("api-version", "The query parameter 'api-version' is required, e.g. ?api-version=2025-04-01-preview.", "missing_required_parameter")
        if not _API_VERSION.match(api_version):
            raise invalid("api-version", f"api-version must look like 2025-04-01-preview, got {api_version!r}.")
        family = family_for(deployment, None)
        body = await read_json_body(request, settings.max_body_bytes)
        image_request = parse_request(body, deployment, family)
        if wants_async(request):
            return await submit(request, image_request, body)
        return await generate_sync(image_request)

    @app.post(
        "/openai/deployments/{deployment}/images/generations:submit",
        summary="Submit a background generation: 202 with Operation-Location",
        status_code=202,
        openapi_extra={**_BODY_DOC, "responses": _ERRORS_DOC},
    )
    async def submit_deployment(deployment: str, request: Request) -> Response:
        family = family_for(deployment, None)
        body = await read_json_body(request, settings.max_body_bytes)
        return await submit(request, parse_request(body, deployment, family), body)

    @app.get("/openai/operations/images/{job_id}", summary="Status of a background generation", name="operation_status")
    async def operation_status(job_id: str) -> Response:
        view = await job_service.status(job_id) if is_safe_id(job_id) else None
        if view is None:
            raise ServiceError(404, "NotFound", f"No image operation has the id {job_id!r}.", param="id")
        headers = {} if view["status"] in ("succeeded", "failed") else {"Retry-After": "5"}
        return JSONResponse(view, headers=headers)

    @app.post(
        "/openai/v1/images/generations",
        summary="Generate images (v1 path; model = deployment name)",
        openapi_extra={**_BODY_DOC, "responses": _ERRORS_DOC},
    )
    async def generate_v1(request: Request) -> Response:
        body = await read_json_body(request, settings.max_body_bytes)
        if not isinstance(body, dict):
            raise invalid(None, "The body must be a JSON object.", "invalid_type")
        model = body.get("model")
        if model is None:
            raise invalid("model", "'model' (the deployment name) is required on the v1 path.", "missing_required_parameter")
        if not isinstance(model, str):
            raise invalid("model", "'model' must be a string (the deployment name).", "invalid_type")
        family = family_for(model, "model")
        image_request = parse_request(body, model, family, api_style_v1=True)
        if wants_async(request):
            return await submit(request, image_request, body)
        return await generate_sync(image_request)

    @app.get("/images/{name:path}", summary="Stable link to an archived image: redirects to a fresh read-only SAS URL")
    async def image_link(name: str) -> Response:
        if not is_archive_path(name):
            raise ServiceError(404, "NotFound", "No archived image or record has this name.", param="name")
        archive = image_service.archive
        if not await archive.exists(name):
            raise ServiceError(404, "NotFound", "No archived image or record has this name.", param="name")
        return RedirectResponse(await archive.link(name), status_code=302, headers={"Cache-Control": "no-store"})

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "deployments": sorted(settings.deployments), "api_style": settings.api_style}

    return app
