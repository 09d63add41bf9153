"""Status of a background generation: the shape Azure used for its own asynchronous image API.

Each caller sees its own jobs (operators every one): another caller's job is answered as an
unknown id is, with the same 404 after the same one storage read.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shared.api.deps import CallerDep, RuntimeDep
from shared.api.public import check_api_version
from shared.api.schema import operation_responses
from shared.api.security import FUNCTION_KEY
from shared.archive import is_safe_id
from shared.echo import shown
from shared.errors import ServiceError
from shared.jobs import JobStatus

router = APIRouter(dependencies=FUNCTION_KEY)


@router.get(
    "/openai/operations/images/{job_id}",
    summary="Status of a background generation",
    name="operation_status",
    response_description="The job",
    responses=operation_responses(),
)
async def operation_status(job_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """``{id, status, created, result?, error?}``; ``Retry-After`` while the job is not finished.

    ``api-version`` (as in ``Operation-Location``) is optional here, and checked when given.
    """
    check_api_version(request.query_params.get("api-version"), required=False)
    view = await runtime.jobs.status(job_id, caller) if is_safe_id(job_id) else None
    if view is None:
        raise ServiceError(404, "NotFound", f"No image operation has the id {shown(job_id)}.", param="id")
    return JSONResponse(view, headers={} if JobStatus(view["status"]).terminal else {"Retry-After": "5"})
