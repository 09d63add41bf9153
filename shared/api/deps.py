"""What a route needs, read from ``app.state`` (set once by :func:`shared.api.create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    """The app's runtime: settings, the generation service and the jobs.

    ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request for a lookup."""
    found: Runtime = request.app.state.runtime
    return found


RuntimeDep = Annotated[Runtime, Depends(runtime)]
