"""A streamed answer (``"stream": true``): ``text/event-stream`` once upstream started, JSON while nothing did.

Everything before the stream starts (validation, the caller's limits, the pool's choice and failover,
upstream's refusals) answers as any request does: JSON with its status. Then the events go out as
shared/streaming.py relays them; ``x-request-id`` names the failure record if the stream breaks, and a
caller with limits gets its ``x-ratelimit-*`` with this stream counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from shared.api.errors import error_response
from shared.api.public import public_base_url
from shared.api.timing import request_deadline
from shared.callers import Caller
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.pool.router import Send
from shared.runtime import Runtime
from shared.service import new_generation_id, sync_prefix, translations_header
from shared.streaming import open_streamed, relay
from shared.upstream.stream import UpstreamStream

# Proxies and browsers must hand each event on as it comes (nginx-style buffers honour X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def stream_now(
    runtime: Runtime, request: Request, image_request: ImageRequest, sender: Callable[[Deadline], Send[UpstreamStream]], caller: Caller,
    input_pixels: Sequence[int] = (),
) -> Response:  # fmt: skip
    """Open the stream upstream (``sender(deadline)`` opens it on a backend) within the request's one deadline, and
    answer with its events; a JSON error if no stream started (a refusal of the caller's limits among them).
    ``caller`` owns the image, names the records and pays (``input_pixels``: an edit's inputs, for its budget)."""
    settings, generation_id = runtime.settings, new_generation_id()
    headers = {"x-request-id": generation_id, **translations_header(image_request)}
    deadline = request_deadline(request, settings)  # from the request's arrival: the wait for a backend and the whole stream
    try:
        streamed = await open_streamed(
            runtime.service, image_request, sender(deadline), generation_id=generation_id, prefix=sync_prefix(), deadline=deadline,
            budget=settings.retry_budget_seconds, caller=caller, input_pixels=input_pixels,
        )  # fmt: skip
    except ServiceError as error:
        response = error_response(error)
        response.headers.update(headers)
        return response
    base = public_base_url(request, settings)

    def link(name: str) -> str:
        return f"{base}{request.app.url_path_for('image_link', name=quote(name))}"

    headers |= streamed.ticket.headers | STREAM_HEADERS  # the caller's x-ratelimit-* with this stream counted
    return StreamingResponse(relay(runtime.service, streamed, link), media_type="text/event-stream", headers=headers)
