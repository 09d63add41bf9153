"""Stable links to archived images: a redirect to a fresh read-only SAS URL, for as long as the image exists.

Each caller follows links to its own blobs only (operators to every one): another caller's is
answered as a missing one is, with the same 404 after the same one storage request.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shared.api.deps import CallerDep, RuntimeDep
from shared.api.schema import image_link_responses
from shared.api.security import FUNCTION_KEY
from shared.archive import is_archive_path
from shared.errors import ServiceError

router = APIRouter(dependencies=FUNCTION_KEY)


@router.get(
    "/images/{name:path}",
    summary="Stable link to an archived image: redirects to a fresh read-only SAS URL",
    status_code=302,
    response_class=RedirectResponse,
    response_description="Redirect to a fresh read-only SAS URL",
    responses=image_link_responses(),
)
async def image_link(name: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> Response:
    """302 to a fresh SAS URL of the archived blob ``name`` the caller may see; 404 for anything else."""
    archive = runtime.service.archive
    # Starlette matches routes with ``$``, which also matches before a trailing newline that the
    # ``path`` parameter then leaves out: ``name`` must be what the path really ends with.
    whole = request.scope.get("path", "").endswith(f"/{name}")
    found, owner = await archive.owner(name) if whole and is_archive_path(name) else (False, None)
    if not found or not caller.may_read(owner):
        raise ServiceError(404, "NotFound", "No archived image or record has this name.", param="name")
    return RedirectResponse(await archive.link(name), status_code=302, headers={"Cache-Control": "no-store"})
