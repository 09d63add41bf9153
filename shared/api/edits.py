"""Image edits: the Azure OpenAI edits routes, multipart as Azure takes them, or JSON naming archived images.

- ``POST /openai/deployments/{deployment}/images/edits?api-version=...`` and
  ``POST /openai/v1/images/edits`` (the deployment in ``model``);
- their ``:submit`` forms, and ``Prefer: respond-async`` on both: 202 with Operation-Location.

A ``multipart/form-data`` body carries ``image`` (one file) or ``image[]`` (several), an
optional ``mask`` and the text fields; it is read as it streams in, within the edit size
limits. An ``application/json`` body names archived images instead (``"image": [names]``,
``"mask": name``). Everything is checked (shared/models/edits.py) before an input is stored
or anything goes upstream; then uploaded inputs are stored once each, the edit is made and
its outputs archived as a generation's are (shared/edits.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shared import edits
from shared.api.body import read_json_body
from shared.api.deps import CallerDep, RuntimeDep
from shared.api.edits_schema import edit_openapi
from shared.api.generation import _family, _submit, _wants_async, answer_now
from shared.api.multipart import Limits, read_form
from shared.api.public import check_api_version
from shared.api.schema import edit_responses, submit_responses
from shared.api.security import FUNCTION_KEY
from shared.api.streamed import stream_now
from shared.api.timing import request_deadline
from shared.callers import Caller
from shared.errors import ServiceError, invalid
from shared.jobs import refuse_stream
from shared.models.edits import FILE_FIELDS, EditRequest, edit_rules, form_values, parse_edit
from shared.models.families import TABLE
from shared.runtime import Runtime
from shared.service import Generation, sync_prefix

router = APIRouter(dependencies=FUNCTION_KEY)

# The most images any family edits at once, and a mask: the most files a form may carry.
MAX_FILES = max(row.edits.max_images for row in TABLE if row.edits is not None) + 1


@dataclass(frozen=True)
class Incoming:
    """An edit as received and checked: the request, the fields a job message repeats, its inputs when uploaded."""

    request: EditRequest
    fields: dict[str, Any]
    uploaded: edits.EditInputs | None
    caller: Caller


@router.post(
    "/openai/deployments/{deployment}/images/edits",
    summary="Edit images (Azure deployment-scoped path)",
    response_description="The edited images, archived",
    responses=edit_responses(),
    openapi_extra=edit_openapi("required", prefer=True),
)
async def edit_deployment(deployment: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Edit now, or queue with ``Prefer: respond-async``."""
    check_api_version(request.query_params.get("api-version"))
    incoming = await _read_deployment(runtime, request, deployment, caller)
    return await (_submit_edit if _wants_async(request) else _edit_now)(runtime, request, incoming)


@router.post(
    "/openai/deployments/{deployment}/images/edits:submit",
    summary="Submit a background edit: 202 with Operation-Location",
    status_code=202,
    response_description="Queued",
    responses=submit_responses(edits=True),
    openapi_extra=edit_openapi("required", prefer=False),
)
async def submit_deployment(deployment: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """Store the uploaded inputs, record and queue the edit: 202 with ``Operation-Location``."""
    check_api_version(request.query_params.get("api-version"))
    return await _submit_edit(runtime, request, await _read_deployment(runtime, request, deployment, caller))


@router.post(
    "/openai/v1/images/edits",
    summary="Edit images (v1 path; model = deployment name)",
    response_description="The edited images, archived",
    responses=edit_responses(),
    openapi_extra=edit_openapi("none", prefer=True),
)
async def edit_v1(request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """The v1 path: ``model`` names the deployment."""
    incoming = await _read(runtime, request, None, caller)
    return await (_submit_edit if _wants_async(request) else _edit_now)(runtime, request, incoming)


@router.post(
    "/openai/v1/images/edits:submit",
    summary="Submit a background edit (v1 path): 202 with Operation-Location",
    status_code=202,
    response_description="Queued",
    responses=submit_responses(edits=True),
    openapi_extra=edit_openapi("none", prefer=False),
)
async def submit_v1(request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """The v1 path's background form."""
    return await _submit_edit(runtime, request, await _read(runtime, request, None, caller))


async def _read_deployment(runtime: Runtime, request: Request, deployment: str, caller: Caller) -> Incoming:
    # A deployment that cannot edit is refused before its body is read.
    edit_rules(_family(runtime, deployment, None, caller), "deployment")
    return await _read(runtime, request, deployment, caller)


async def _read(runtime: Runtime, request: Request, deployment: str | None, caller: Caller) -> Incoming:
    """The body, multipart or JSON, checked; ``deployment`` None on the v1 path (``model`` names it)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await _read_multipart(runtime, request, deployment, caller)
    if media == "application/json":
        return await _read_json(runtime, request, deployment, caller)
    raise ServiceError(
        415, "unsupported_media_type", f"Edits take multipart/form-data (uploaded images) or application/json (archived names), got {media or 'none'!r}."
    )


def _target(runtime: Runtime, deployment: str | None, fields: dict[str, Any], caller: Caller) -> tuple[str, str]:
    """(deployment, family): the path's, or on the v1 path the one ``model`` names."""
    if deployment is not None:
        return deployment, _family(runtime, deployment, None, caller)
    model = fields.get("model")
    if model is None:
        raise invalid("model", "'model' (the deployment name) is required on the v1 path.", "missing_required_parameter")
    if not isinstance(model, str):
        raise invalid("model", "'model' must be a string (the deployment name).", "invalid_type")
    return model, _family(runtime, model, "model", caller)


async def _read_multipart(runtime: Runtime, request: Request, deployment: str | None, caller: Caller) -> Incoming:
    s = runtime.settings
    limits = Limits(s.max_edit_total_bytes, s.max_edit_file_bytes, s.max_body_bytes, MAX_FILES, FILE_FIELDS)
    form = await read_form(request, limits)
    fields = form_values(form.fields)
    v1 = deployment is None
    deployment, family = _target(runtime, deployment, fields, caller)
    edit_rules(family, "model")
    images = [(name, data) for name, data in form.files if name != "mask"]
    masks = [data for name, data in form.files if name == "mask"]
    if len(masks) > 1:
        raise invalid("mask", "mask was sent more than once; send one mask (it applies to the first image).")
    param = images[0][0] if images else "image"
    if len({name for name, _ in images}) > 1:
        raise invalid("image[]", "Send the images either as one 'image' or as 'image[]' parts, not both.")
    # The fields first (no I/O, no bytes read): then the images are joined, sniffed and hashed.
    parse_edit(fields, [name for name, _ in images], "mask" if masks else None, deployment, family, api_style_v1=v1, image_param=param)
    uploaded = await edits.check_uploads(runtime.service, family, images, masks[0] if masks else None, caller)
    names = [item.name for item in uploaded.images]
    mask = uploaded.mask.name if uploaded.mask else None
    edit = parse_edit(fields, names, mask, deployment, family, api_style_v1=v1, image_param=param)
    return Incoming(edit, fields, uploaded, caller)


async def _read_json(runtime: Runtime, request: Request, deployment: str | None, caller: Caller) -> Incoming:
    body = await read_json_body(request, runtime.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise invalid(None, "The body must be a JSON object.", "invalid_type")
    v1 = deployment is None
    deployment, family = _target(runtime, deployment, body, caller)
    edit = edits.edit_from_json(body, deployment, family, api_style_v1=v1)
    fields = {k: v for k, v in body.items() if k not in ("image", "mask")}
    return Incoming(edit, fields, None, caller)


async def _edit_now(runtime: Runtime, request: Request, incoming: Incoming) -> Response:
    """Store the uploaded inputs, edit, archive: answered as a generation is (:func:`answer_now`); or streamed."""
    settings, service = runtime.settings, runtime.service
    if incoming.request.stream:
        if incoming.uploaded is not None:
            await edits.store_uploads(service, incoming.uploaded, incoming.caller)
        inputs = incoming.uploaded or await edits.read_inputs(service, incoming.request, incoming.caller)
        return await stream_now(runtime, request, incoming.request, functools.partial(edits.stream_send, inputs), incoming.caller, inputs.pixels)

    async def edit(generation_id: str) -> Generation:
        if incoming.uploaded is not None:
            await edits.store_uploads(service, incoming.uploaded, incoming.caller)
        return await edits.run_edit(
            service, incoming.request, inputs=incoming.uploaded, generation_id=generation_id, prefix=sync_prefix(),
            deadline=request_deadline(request, settings), budget=settings.retry_budget_seconds, caller=incoming.caller,
        )  # fmt: skip

    return await answer_now(runtime, incoming.request, edit)


async def _submit_edit(runtime: Runtime, request: Request, incoming: Incoming) -> JSONResponse:
    """Inputs stored (or the named ones looked up) first, then the edit queued by name: 202."""
    refuse_stream(incoming.request)
    queued = edits.queued_edit(incoming.request, incoming.fields)
    if incoming.uploaded is not None:
        await edits.store_uploads(runtime.service, incoming.uploaded, incoming.caller)
    else:
        await edits.check_names(runtime.service, incoming.request, incoming.caller)
    return await _submit(runtime, request, incoming.request, queued, incoming.caller)
