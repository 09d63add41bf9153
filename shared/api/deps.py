"""What a route needs, read from ``app.state`` (set once by :func:`shared.api.create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.callers import Caller, request_caller
from shared.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    """The app's runtime: settings, the generation service and the jobs.

    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request for a lookup."""
    found: Runtime = request.app.state.runtime
    return found


async def caller(request: Request) -> Caller:
    """Who is calling, as the configured mode (IMAGES_CALLER_AUTH) knows it: 401/403 in entra mode without a usable principal.

    Key mode reads no header: whatever identity a client sends is ignored."""
    found: Runtime = request.app.state.runtime
    return request_caller(found.settings.caller_auth, request.headers)


RuntimeDep = Annotated[Runtime, Depends(runtime)]
CallerDep = Annotated[Caller, Depends(caller)]
