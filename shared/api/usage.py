"""``GET /usage?day=YYYY-MM-DD``: what the caller's records of a day add up to (shared/callers/usage.py).

A caller sees its own; an operator may name one caller (``caller=<mode:principal>``, as records and
``/usage`` spell it) or ask for every caller (``caller=all``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from shared.api.deps import CallerDep, RuntimeDep
from shared.api.schema import json_responses
from shared.api.security import FUNCTION_KEY
from shared.callers import MODES, Caller
from shared.callers.limits import CALLER_ID
from shared.callers.usage import Usage
from shared.errors import ServiceError, invalid
from shared.index import IndexReader
from shared.index.records import IndexedRecords
from shared.runtime import Runtime

router = APIRouter(tags=["usage"], dependencies=FUNCTION_KEY)

ALL = "all"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

_TOTALS = {
    "type": "object",
    "required": ["requests", "images", "cost_usd", "unpriced", "input_tokens", "output_tokens", "total_tokens", "failed", "pending"],
    "properties": {
        "requests": {"type": "integer", "description": "Generations and edits that succeeded."},
        "images": {"type": "integer"},
        "cost_usd": {"type": "number", "description": "What they cost (shared/pricing.py), unpriced ones left out."},
        "unpriced": {"type": "integer", "description": "Succeeded requests of a family without a price."},
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "failed": {"type": "integer", "description": "Calls that failed (no image to count)."},
        "pending": {"type": "integer", "description": "Jobs that have not ended."},
    },
}
_REPORT = {"type": "object", "required": ["total", "deployments"], "properties": {"total": _TOTALS, "deployments": {"type": "object", "additionalProperties": _TOTALS}}}
USAGE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["object", "day", "caller", "total", "deployments"],
    "properties": {
        "object": {"type": "string", "enum": ["usage"]},
        "day": {"type": "string", "format": "date"},
        "caller": {"type": "string", "description": "The caller's id (mode:principal), or all."},
        "total": _TOTALS,
        "deployments": {"type": "object", "additionalProperties": _TOTALS, "description": "Per deployment name."},
        "callers": {"type": "object", "additionalProperties": _REPORT, "description": "With caller=all: per caller id."},
    },
}
USAGE_PARAMETERS: list[dict[str, Any]] = [
    {"name": "day", "in": "query", "required": False, "description": "A UTC day like 2026-11-20 (default today).", "schema": {"type": "string", "format": "date"}},
    {
        "name": "caller", "in": "query", "required": False,
        "description": "Operators only: a caller's id (mode:principal) or all. Default: the caller asking.", "schema": {"type": "string"},
    },
]  # fmt: skip


async def today() -> str:
    """The default day: today in UTC (tests override this)."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def asked_caller(value: str | None, caller: Caller) -> str | None:
    """The caller id a request asks about (None: every caller); 400 for a value that is no caller id, 403 for another's unless operator."""
    if not value or value == caller.id:
        return caller.id
    if value != ALL and not CALLER_ID.fullmatch(value):
        raise invalid("caller", f"caller must be a caller's id (mode:principal, mode one of {', '.join(MODES)}) or {ALL}.")
    if not caller.is_operator:
        raise ServiceError(403, "PermissionDenied", "Only an operator sees another caller's usage (or every caller's).", param="caller")
    return None if value == ALL else value


def _day(value: str) -> str:
    try:
        if _DAY.fullmatch(value):
            dt.date.fromisoformat(value)
            return value
    except ValueError:
        pass
    raise invalid("day", f"day must be a date like 2026-11-20, got {value[:40]!r}.")


def usage_of(runtime: Runtime) -> Usage:
    """The usage views over the runtime's storage: the index, its checkpoints, the records it points at."""
    s, blobs = runtime.settings, runtime.service.blobs
    jobs = blobs.get_container_client(s.jobs_container)
    return Usage(IndexReader(jobs), IndexedRecords(blobs.get_container_client(s.images_container), jobs, runtime.service.books.index), jobs)


@router.get(
    "/usage",
    summary="A day's images, cost and tokens per deployment, summed from the records",
    response_description="The day's usage",
    responses=json_responses(
        USAGE_BODY,
        "The usage of the caller (or the one asked for, or every caller) on the day.",
        {
            400: "day or caller is malformed (param names it).",
            403: "PermissionDenied: only an operator asks about another caller or all.",
        },
    ),
    openapi_extra={"parameters": USAGE_PARAMETERS},
)
async def usage_route(request: Request, runtime: RuntimeDep, caller: CallerDep, default_day: Annotated[str, Depends(today)]) -> JSONResponse:
    """The caller's images, cost and tokens per deployment on ``day`` (default today, UTC)."""
    day = _day(request.query_params.get("day") or default_day)
    who = asked_caller(request.query_params.get("caller"), caller)
    return JSONResponse(await usage_of(runtime).of(day, who), headers={"Cache-Control": "no-store"})
