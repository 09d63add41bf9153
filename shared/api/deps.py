"""What a route needs, read from ``app.state`` (set once by :func:`shared.api.create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.runtime import Runtime


def runtime(request: Request) -> Runtime:
    """The app's runtime: settings, the generation service and the jobs."""
    found: Runtime = request.app.state.runtime
    return found


RuntimeDep = Annotated[Runtime, Depends(runtime)]
