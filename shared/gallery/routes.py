"""The gallery's routes: ``GET /gallery`` (a day, newest first, filtered, paged) and a page per generation or job.

Same auth as every route (the function key in Azure; a browser passes it as ``?code=``). A caller
sees its own tiles; an operator every caller's, or one caller's with ``?caller=``. Another caller's
generation or job answers exactly as a missing one does (404).
Everything the routes need comes from ``request.app.state.runtime``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from shared.api.deps import CallerDep
from shared.api.schema import page_responses
from shared.api.security import FUNCTION_KEY
from shared.archive import is_safe_id
from shared.errors import ServiceError
from shared.gallery.browse import DEFAULT_PER_PAGE, MAX_PER_PAGE, GalleryQuery, build_page
from shared.gallery.pages import Links, origin, render
from shared.gallery.reader import DAY, JOB_PREFIX, GalleryReader, day_of
from shared.gallery.tiles import STATUSES, Tile, tile_from_job, tile_from_record
from shared.runtime import Runtime
from shared.service import sync_prefix

router = APIRouter(tags=["gallery"], dependencies=FUNCTION_KEY)


async def app_runtime(request: Request) -> Runtime:
    """The app's runtime (set by create_app)."""
    found: Runtime = request.app.state.runtime
    return found


async def today() -> str:
    """The default day: today in UTC, as the archive files synchronous generations (tests override this)."""
    return sync_prefix()


RuntimeDep = Annotated[Runtime, Depends(app_runtime)]


def _reader(runtime: Runtime) -> GalleryReader:
    settings = runtime.settings
    return GalleryReader.for_storage(runtime.service.blobs, settings.images_container, settings.jobs_container, runtime.service.books.index)


def _links(request: Request) -> Links:
    return Links(root=str(request.scope.get("root_path", "")), code=request.query_params.get("code") or None)


# The filters GalleryQuery.parse reads by hand (so a bad one is a 400 in the Azure shape, never FastAPI's 422).
GALLERY_PARAMETERS: list[dict[str, Any]] = [
    {"name": "day", "in": "query", "required": False, "description": "A date like 2026-11-20 (default today, UTC).", "schema": {"type": "string", "format": "date"}},
    {"name": "deployment", "in": "query", "required": False, "description": "Only this deployment's images.", "schema": {"type": "string"}},
    {"name": "status", "in": "query", "required": False, "description": "Only this status.", "schema": {"type": "string", "enum": list(STATUSES)}},
    {"name": "caller", "in": "query", "required": False, "description": "Operators only: one caller's tiles (its id, mode:principal).", "schema": {"type": "string"}},
    {
        "name": "per_page", "in": "query", "required": False, "description": f"Tiles a page (default {DEFAULT_PER_PAGE}).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE},
    },
    {"name": "continuation", "in": "query", "required": False, "description": "The next page's token, as the page links it.", "schema": {"type": "string"}},
]  # fmt: skip


@router.get(
    "/gallery",
    response_class=HTMLResponse,
    summary="What was generated, for people: a day's images, newest first (HTML)",
    response_description="The day's tiles (HTML)",
    responses=page_responses(
        "The day's tiles (HTML)",
        {
            400: "A filter breaks a rule (param names it): day, deployment, status, caller, per_page or continuation.",
            403: "PermissionDenied: only an operator chooses another caller's tiles.",
        },
    ),
    openapi_extra={"parameters": GALLERY_PARAMETERS},
)
async def gallery_index(request: Request, runtime: RuntimeDep, caller: CallerDep, day: Annotated[str, Depends(today)]) -> HTMLResponse:
    """Tiles of one day (default today) with prompt, model, size, time, cost and status; filters and paging by query."""
    query = GalleryQuery.parse(request.query_params, day)
    reader = _reader(runtime)
    page = await build_page(reader, query, caller, runtime.settings.family_of)
    context = {"page": page, "links": _links(request), "deployments": sorted(runtime.settings.deployments), "operator": caller.is_operator}
    return render("index.html", context, storage_origin=origin(reader.images.url))


@router.get(
    "/gallery/{prefix}/{item_id}",
    response_class=HTMLResponse,
    summary="One generation or job: its record, inputs and images (HTML)",
    response_description="The record and its images (HTML)",
    responses=page_responses("The record and its images (HTML)", {404: "NotFound: no generation (prefix: its day) or job (prefix: jobs) has this name."}),
)
async def gallery_item(prefix: str, item_id: str, request: Request, runtime: RuntimeDep, caller: CallerDep) -> HTMLResponse:
    """The record of a generation (``prefix`` is its day) or a job (``prefix`` is ``jobs``), images at full size."""
    not_found = ServiceError(404, "NotFound", "No generation or job has this name.", param="id")
    if not (DAY.fullmatch(prefix) or prefix == JOB_PREFIX) or not is_safe_id(item_id):
        raise not_found
    reader = _reader(runtime)
    record, job = await reader.item(prefix, item_id, caller)
    tile: Tile
    if job is not None:
        tile = tile_from_job(job, runtime.settings.family_of)
    elif record is not None:
        tile = tile_from_record(prefix, record)
    else:
        raise not_found
    context = {
        "tile": tile,
        "record": record,
        "job": job,
        "images": _images(record, tile),
        "inputs": tile.inputs,
        "mask": [tile.mask] if tile.mask else [],
        "links": _links(request),
        "day": prefix if DAY.fullmatch(prefix) else (day_of(tile.time) if tile.time else None),
    }
    return render("detail.html", context, storage_origin=origin(reader.images.url))


def _images(record: dict[str, Any] | None, tile: Tile) -> list[dict[str, Any]]:
    """Each image with what the record says of it (size in bytes, type, hash, revised prompt)."""
    described = {i["name"]: i for i in (record or {}).get("images") or [] if isinstance(i, dict) and isinstance(i.get("name"), str)}
    names = list(described) or tile.images
    return [{"name": name, **described.get(name, {})} for name in names]
