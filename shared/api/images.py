"""Stable links to archived images: a redirect to a fresh read-only SAS URL, for as long as the image exists."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shared.api.deps import RuntimeDep
from shared.api.schema import FUNCTION_KEY, image_link_responses
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
async def image_link(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """302 to a fresh SAS URL of the archived blob ``name``; 404 for anything else."""
    archive = runtime.service.archive
    # Starlette matches routes with ``$``, which also matches before a trailing newline that the
    # ``path`` parameter then leaves out: ``name`` must be what the path really ends with.
    whole = request.scope.get("path", "").endswith(f"/{name}")
    if not whole or not is_archive_path(name) or not await archive.exists(name):
        raise ServiceError(404, "NotFound", "No archived image or record has this name.", param="name")
    return RedirectResponse(await archive.link(name), status_code=302, headers={"Cache-Control": "no-store"})
