"""Generation routes: the deployment path, the v1 path, ``:submit`` and ``Prefer: respond-async``.

Each route checks in the same order (api-version, deployment, body, model rules), so a
request is refused before anything goes upstream; then it is generated now, or recorded
and queued (202 with ``Operation-Location``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shared.api.body import read_json_body
from shared.api.deps import CallerDep, RuntimeDep
from shared.api.errors import error_response
from shared.api.public import check_api_version, operation_location
from shared.api.schema import generation_openapi, generation_responses, submit_responses
from shared.api.security import FUNCTION_KEY
from shared.api.streamed import stream_now
from shared.api.timing import request_deadline
from shared.archive import is_safe_id
from shared.callers import Caller
from shared.callers.budgets import check_deployment
from shared.echo import shown
from shared.errors import ServiceError, invalid
from shared.jobs import new_job_id, refuse_stream
from shared.models import ImageRequest, parse_request
from shared.pricing import cost_header
from shared.runtime import Runtime
from shared.service import Generation, new_generation_id, sync_prefix, translations_header
from shared.streaming import generation_send

router = APIRouter(dependencies=FUNCTION_KEY)


@router.post(
    "/openai/deployments/{deployment}/images/generations",
    summary="Generate images (Azure deployment-scoped path)",
    response_description="The images, archived",
    responses=generation_responses(),
    openapi_extra=generation_openapi("required"),
)
async def generate_deployment(deployment: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Generate now, or queue with ``Prefer: respond-async``."""
    check_api_version(request.query_params.get("api-version"))
    family = _family(runtime, deployment, None, caller)
    body = await read_json_body(request, runtime.settings.max_body_bytes)
    image_request = parse_request(body, deployment, family)
    if _wants_async(request):
        return await _submit(runtime, request, image_request, body, caller)
    return await _generate_now(runtime, request, image_request, caller)


@router.post(
    "/openai/deployments/{deployment}/images/generations:submit",
    summary="Submit a background generation: 202 with Operation-Location",
    status_code=202,
    response_description="Queued",
    responses=submit_responses(),
    openapi_extra=generation_openapi("required", prefer=False),
)
async def submit_deployment(deployment: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Record and queue the generation: 202 with ``Operation-Location``."""
    check_api_version(request.query_params.get("api-version"))
    family = _family(runtime, deployment, None, caller)
    body = await read_json_body(request, runtime.settings.max_body_bytes)
    return await _submit(runtime, request, parse_request(body, deployment, family), body, caller)


@router.post(
    "/openai/v1/images/generations",
    summary="Generate images (v1 path; model = deployment name)",
    response_description="The images, archived",
    responses=generation_responses(),
    openapi_extra=generation_openapi("none"),
)
async def generate_v1(request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """The v1 path: ``model`` names the deployment."""
    body = await read_json_body(request, runtime.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise invalid(None, "The body must be a JSON object.", "invalid_type")
    model = body.get("model")
    if model is None:
        raise invalid("model", "'model' (the deployment name) is required on the v1 path.", "missing_required_parameter")
    if not isinstance(model, str):
        raise invalid("model", "'model' must be a string (the deployment name).", "invalid_type")
    image_request = parse_request(body, model, _family(runtime, model, "model", caller), api_style_v1=True)
    if _wants_async(request):
        return await _submit(runtime, request, image_request, body, caller)
    return await _generate_now(runtime, request, image_request, caller)


def _family(runtime: Runtime, deployment: str, param: str | None, caller: Caller) -> str:
    """The deployment's family: 404 when the app does not serve it, 403 when the caller may not use it (before its body is read)."""
    family = runtime.settings.family_of(deployment)
    if family is None:
        known = ", ".join(sorted(runtime.settings.deployments))
        raise ServiceError(404, "DeploymentNotFound", f"The deployment {shown(deployment)} is not served here. Known deployments: {known}.", param=param)
    check_deployment(runtime.settings.caller_limits, caller.id, deployment, param)
    return family


def _wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


async def _generate_now(runtime: Runtime, request: Request, image_request: ImageRequest, caller: Caller) -> Response:
    """Generate within the request's deadline (from its arrival), archive and answer."""
    settings, service = runtime.settings, runtime.service
    if image_request.stream:
        return await stream_now(runtime, request, image_request, generation_send, caller)

    async def generate(generation_id: str) -> Generation:
        return await service.generate(
            image_request, generation_id=generation_id, prefix=sync_prefix(), deadline=request_deadline(request, settings),
            budget=settings.retry_budget_seconds, caller=caller,
        )  # fmt: skip

    return await answer_now(runtime, image_request, generate)


async def answer_now(runtime: Runtime, image_request: ImageRequest, make: Callable[[str], Awaitable[Generation]]) -> Response:
    """The synchronous answer of a generation or an edit that ``make`` makes under a new id: the images, or the error.

    Either way the answer carries ``x-request-id``, the id the record (or the failure record) is filed under.
    """
    generation_id = new_generation_id()
    headers = {"x-request-id": generation_id, **translations_header(image_request)}
    try:
        generation = await make(generation_id)
    except ServiceError as error:
        response = error_response(error)
        response.headers.update(headers)
        return response
    headers |= cost_header(generation.record) | generation.headers
    return JSONResponse(await runtime.service.response_body(generation), headers=headers)


async def _submit(runtime: Runtime, request: Request, image_request: ImageRequest, body: dict[str, Any], caller: Caller) -> JSONResponse:
    """Record and enqueue a checked request: 202 with Operation-Location.

    An ``Idempotency-Key`` names the job through the app's secret, scoped by caller and deployment
    (shared/callers/scope.py): the same key from another caller or for another deployment is another
    job, not a 409, and nobody can compute another caller's job id from its key."""
    refuse_stream(image_request)
    key = request.headers.get("idempotency-key")
    if key is not None and not is_safe_id(key):
        raise invalid("Idempotency-Key", "Idempotency-Key must be 1-64 letters, digits, '-' or '_'.")
    job_id = await runtime.service.scope.job_id(caller, image_request.deployment, key) if key else new_job_id()
    queued = {k: v for k, v in body.items() if k != "model"}
    job, created = await runtime.jobs.submit(job_id, image_request.deployment, queued, caller=caller)
    if not created and (job.request != queued or job.deployment != image_request.deployment):
        raise ServiceError(409, "IdempotencyKeyReused", "This Idempotency-Key was used for a different request; use a new key.", param="Idempotency-Key")
    location = operation_location(request, runtime.settings, job_id)
    headers = {"Operation-Location": location, "Retry-After": "5", **translations_header(image_request)}
    return JSONResponse({"id": job_id, "status": job.status.value}, status_code=202, headers=headers)
