"""The simulator's image streams: ``"stream": true`` answered as upstream answers it, over server-sent events.

Upstream (the gpt-image families, generations and edits alike) answers a streamed request with
``text/event-stream``: for each image, ``partial_images`` (0-3) ``<prefix>.partial_image`` events, then
one ``<prefix>.completed`` event, where the prefix is ``image_generation`` or ``image_edit``. Each event is
``event: <type>`` and ``data: <JSON>`` with the same ``type`` inside, as the openai SDK reads them::

    event: image_generation.partial_image
    data: {"type": "image_generation.partial_image", "b64_json": "...", "partial_image_index": 0,
           "size": "1024x1024", "quality": "low", "background": "auto", "output_format": "png", "created_at": 1764000000}

    event: image_generation.completed
    data: {"type": "image_generation.completed", "b64_json": "...", "size": ..., "usage": {...}, "created_at": ...}

The events are spaced evenly over the simulated latency (the last one, the completed image, at its end),
so the first partial image of a 4 s generation with 3 partial images comes after 1 s. The completed
event's usage is the final image's, as a plain generation's: OpenAI prices each partial image at 100 more
image output tokens, and the service adds them on top of the usage (shared/pricing.py ``streamed_cost``).
Whether Azure's reported usage already counts them is not published; the simulator and the service take
the same side, so a local stream is priced once.

Stream faults (prompt markers; the stream starts normally, the request is billed):

    [[stream-cut:K]]    after K events the connection is dropped (no final chunk, no completed event)
    [[stream-stall:K]]  after K events nothing more is sent; the connection stays open until the
                        client leaves, ``POST /_sim/release`` or ``hang_seconds``
    [[stream-error:K]]  after K events an ``error`` event (``{"type": "error", "error": {...}}``), then the end
    [[stream-garbage:K]]  after K events a partial image event whose b64_json is not base64, then the end
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

STREAM_MARKERS: dict[str, str] = {
    "[[stream-cut:K]]": "a streamed answer whose connection drops after K events",
    "[[stream-stall:K]]": "a streamed answer that sends nothing more after K events (held open)",
    "[[stream-error:K]]": "a streamed answer with an error event after K events",
    "[[stream-garbage:K]]": "a streamed answer whose event K is a partial image that is not base64",
}
STREAM_PATTERN = r"stream-(?:cut|stall|error|garbage):\d+"
_STREAM_FAULT = re.compile(r"\[\[stream-(cut|stall|error|garbage):(\d+)\]\]")
STREAM_ERROR = {
    "type": "server_error",
    "code": "server_error",
    "message": "The server had an error while processing your request.",
    "param": None,
}

class SimulatedCut(ConnectionAbortedError):
    """The simulator dropping a stream on purpose (``[[stream-cut:K]]``): the server closes the connection unfinished."""


class QuietCuts(logging.Filter):
    """Keeps the server's "Exception in ASGI application" and traceback for a :class:`SimulatedCut` out of the log:
    the cut is what the request asked for. Any other exception is reported as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedCut))


def quiet_cuts(logger: logging.Logger | None = None) -> None:
    """Install :class:`QuietCuts` on the server's error logger (uvicorn's, by default) once."""
    target = logger or logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietCuts) for f in target.filters):
        target.addFilter(QuietCuts())


Prefix = Literal["image_generation", "image_edit"]
StreamFault = tuple[Literal["cut", "stall", "error", "garbage"], int]


def stream_fault(prompt: str) -> StreamFault | None:
    """The stream fault a prompt asks for, as (kind, events before it), or None."""
    match = _STREAM_FAULT.search(prompt)
    return (match[1], int(match[2])) if match else None  # type: ignore[return-value]


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event: its type line, its JSON data line, the blank line that ends it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(frozen=True)
class StreamedImage:
    """One image of a streamed answer: its partial images and the final image, base64, and the usage its completed event carries."""

    partials: list[bytes]
    final: bytes
    usage: Mapping[str, Any]


@dataclass(frozen=True)
class ImageStream:
    """What a streamed answer sends: the event prefix, the request's settings every event repeats, the images."""

    prefix: Prefix
    settings: Mapping[str, Any]  # size, quality, background, output_format
    images: list[StreamedImage]
    seconds: float  # the latency the events are spaced over
    fault: StreamFault | None = None
    stall_seconds: float = 600.0  # how long [[stream-stall:K]] holds the connection at most

    def events(self, now: Callable[[], float]) -> list[tuple[str, Callable[[], bytes]]]:
        """(type, renderer) of every event in order; rendering when sent stamps ``created_at`` then."""
        planned: list[tuple[str, Callable[[], bytes]]] = []
        for image in self.images:
            for index, partial in enumerate(image.partials):
                kind = f"{self.prefix}.partial_image"
                fields = {"b64_json": partial, "partial_image_index": index}
                planned.append((kind, self._renderer(kind, fields, now)))
            kind = f"{self.prefix}.completed"
            planned.append((kind, self._renderer(kind, {"b64_json": image.final, "usage": dict(image.usage)}, now)))
        return planned

    def _renderer(self, kind: str, fields: Mapping[str, Any], now: Callable[[], float]) -> Callable[[], bytes]:
        def render() -> bytes:
            b64: bytes = fields["b64_json"]
            placeholder = "sim-b64-placeholder"
            data = {"type": kind, **self.settings, **fields, "b64_json": placeholder, "created_at": int(now())}
            return sse(kind, data).replace(placeholder.encode(), b64, 1)  # base64 spliced in, never re-encoded

        return render


async def stream_events(
    stream: ImageStream,
    wait: Callable[[float], Awaitable[bool]],
    now: Callable[[], float],
    *,
    on_completed: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The events of ``stream``, each after its share of the latency (``wait`` returns False once the client
    left: the stream ends). ``on_completed`` runs when the last event has been handed to the server."""
    planned = stream.events(now)
    gap = stream.seconds / max(1, len(planned))
    fault_kind, fault_after = stream.fault if stream.fault else (None, len(planned) + 1)
    for sent, (_, render) in enumerate(planned):
        if sent == fault_after:
            if fault_kind == "cut":
                raise SimulatedCut(f"[[stream-cut:{fault_after}]]: the simulator drops the stream")
            if fault_kind == "error":
                yield sse("error", {"type": "error", "error": STREAM_ERROR})
                return
            if fault_kind == "garbage":
                kind = f"{stream.prefix}.partial_image"
                yield sse(kind, {"type": kind, **stream.settings, "b64_json": "not base64!", "partial_image_index": sent, "created_at": int(now())})
                return
            await wait(stream.stall_seconds)  # stall: until the client leaves, the test releases it or time is up
            return
        if not await wait(gap):
            return
        yield render()
    on_completed()
