"""When a synchronous call must be done: one deadline from the moment its request arrived.

Azure's front end ends an HTTP call after 230 s whatever the app is doing, and a caller's SDK may
then send the request again (and pay again). So a synchronous call has one
:class:`~shared.deadline.Deadline` of ``IMAGES_SYNC_TIMEOUT_SECONDS`` (at most 220 s, leaving time
to archive and answer), counted from when the request arrived: an edit's upload, every booked
wait, every attempt on every backend and every read take from it. :class:`ArrivalStamp` notes the
arrival in the request's scope; routes call :func:`request_deadline`.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.deadline import Deadline
from shared.settings import Settings

ARRIVED = "images_arrived"  # the request's state key: monotonic seconds when the request arrived


class ArrivalStamp:
    """Pure ASGI middleware: notes in each HTTP request's state when it arrived (before its body is read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[ARRIVED] = time.monotonic()
        await self.app(scope, receive, send)


def request_deadline(request: Request, settings: Settings) -> Deadline:
    """The synchronous call's one deadline: ``IMAGES_SYNC_TIMEOUT_SECONDS`` from the request's arrival (or from now)."""
    arrived = getattr(request.state, ARRIVED, None)
    return Deadline(settings.sync_timeout_seconds, started=arrived if isinstance(arrived, float) else None)
