"""Streamed generations and edits: upstream's events passed on as they arrive, the final image archived first.

A streamed request (``"stream": true``) is checked and routed like any other: validation, the pool's
choice of backend and its failover on answers that say upstream did no work all happen before
anything is sent to the caller, and a refusal there is the usual JSON error with its status
(:func:`open_streamed`). Once upstream answers 200 with events, the caller gets ``text/event-stream``
(:func:`relay`):

- each ``<kind>.partial_image`` event is passed on piece by piece as it arrives, as upstream sent it,
  checked while it passes (strict JSON, valid base64) but never held whole or re-encoded;
- the ``<kind>.completed`` event's image is decoded while it arrives, archived with its record (which
  notes the stream and the partial images sent, and prices them), and only then sent on: upstream's
  fields plus ``url`` (the stable link, ``/images/{name}``), ``name`` and ``cost``, the base64 written
  in slices from the archived bytes;
- anything that goes wrong after the stream started (upstream's ``error`` event, a cut or stalled
  stream, an unusable image, storage) is never repeated and never sent to another backend: the caller
  gets one ``error`` event (``{"type": "error", "error": {"code", "message", "param"?}}``, the body of
  every error of this service) and the stream ends; a failure record is written under the request id.

While upstream is silent, a comment (``: keep-alive``) goes out every :data:`HEARTBEAT_SECONDS`.

With ``IMAGES_ARCHIVE_PARTIAL_IMAGES`` each partial image is also decoded while it passes and, once the caller
has it, archived beside the final image (``partial-<n>.<ext>``, its caller's like the final one) and named in
the record (or in the failure record of a stream that broke after it); a partial image storage refuses is
logged and left out, never the end of the stream.

Memory: one partial event at a time (the partial image once more, decoded, with the setting above), or the final
image once plus a slice of its base64. A caller who leaves mid-stream does not stop the work: the final image
is archived all the same (:data:`UNATTENDED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pybase64
from azure.storage.blob import ContentSettings

from shared import pricing, telemetry
from shared.archive import EXTENSIONS, OWNER_METADATA, blob_base
from shared.callers import Caller
from shared.callers.books import Ticket
from shared.deadline import Deadline
from shared.errors import ServiceError, storage_call
from shared.models import ImageRequest
from shared.pool.router import Routed, Send
from shared.service import HOLD_MARGIN_SECONDS, Generation, ImageService, generated, generation_attributes
from shared.upstream import UpstreamClient, UpstreamImage, UpstreamResult
from shared.upstream.body import ImageBodyReader
from shared.upstream.errors import NOT_REPEATED, sniff_content_type, stream_error, unexpected_error, upstream_error
from shared.upstream.events import SseEvent, SsePiece
from shared.upstream.stream import UpstreamStream, open_stream

log = logging.getLogger(__name__)

B64_SLICE = 3 * 64 * 1024  # image bytes per slice of base64 written to the caller
# While upstream sends nothing (a slow model before its first partial image), a comment line every so often
# keeps both hops busy: the host's forwarding to the worker gives up after 240 s idle (docs/streaming.md, Hosting). The
# SSE specification has clients ignore comments; the openai SDK does.
HEARTBEAT_SECONDS = 15.0
HEARTBEAT = b": keep-alive\n\n"
_PLACEHOLDER = "\x00b64\x00"


def sse(kind: str, data: bytes) -> bytes:
    """One server-sent event: ``event: kind``, ``data: ...`` and the blank line that ends it."""
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def error_event(error: ServiceError) -> bytes:
    """The ``error`` event a stream ends with: this service's error body, typed as upstream types its events."""
    return sse("error", json.dumps({"type": "error", **error.body()}, ensure_ascii=False).encode())


def generation_send(deadline: Deadline) -> Send[UpstreamStream]:
    """The pool's ``send`` for a streamed generation: open the stream on the chosen backend within ``deadline``."""

    async def send(client: UpstreamClient, request: ImageRequest, budget: float) -> UpstreamStream:
        url, body = client.url_and_body(request)
        return await open_stream(client, url, json.dumps(body).encode(), {"Content-Type": "application/json"}, request, deadline=deadline, budget=budget)

    return send


@dataclass
class StreamCall:
    """A streamed request that may go upstream, and what its records and its caller's budget need."""

    request: ImageRequest
    generation_id: str
    prefix: str
    caller: Caller  # who asked, as the platform vouches: the records name it, the archived blobs carry its id
    ticket: Ticket  # the caller's hold on its budget (the request's worst case) and the record's index entry


@dataclass
class Streamed(StreamCall):
    """A stream upstream has started: where (the pool's choice) and the open stream."""

    routed: Routed[UpstreamStream]


async def open_streamed(
    service: ImageService, request: ImageRequest, send: Send[UpstreamStream], *, generation_id: str, prefix: str, deadline: Deadline,
    budget: float, caller: Caller, input_pixels: Sequence[int] = (),
) -> Streamed:  # fmt: skip
    """Hold the request's worst case in the caller's budget (partial images included; ``input_pixels``: an edit's
    inputs) or refuse it (403, 429: nothing sent), then route and open the stream within ``deadline`` (failing over
    as the pool allows: only while upstream did no work). ServiceError when no stream started: the hold given back
    or charged by the one rule, a failure record when the request reached upstream. ``send`` opens the stream on a
    backend within the same deadline (:func:`generation_send`, ``shared.edits.stream_send``)."""
    await service.archive.ensure_container()  # fail on storage before paying for an image
    ticket = await service.books.open(
        caller, request, generation_id=generation_id, prefix=prefix, kind="sync", ttl=deadline.remaining() + HOLD_MARGIN_SECONDS,
        input_pixels=input_pixels,
    )  # fmt: skip
    call = StreamCall(request, generation_id, prefix, caller, ticket)
    try:
        routed = await service.pools.route(request, send, deadline=deadline, budget=budget)
    except ServiceError as error:
        await _failed(service, call, error)
        raise
    return Streamed(request, generation_id, prefix, caller, ticket, routed)


async def _failed(service: ImageService, streamed: StreamCall, error: ServiceError, partials: Sequence[str] = ()) -> None:
    """Count the failure; end the hold by the one rule (a stream that started may have been billed: its worst case is
    charged) and write the failure record when the request reached upstream (naming the partial images archived)."""
    labels = telemetry.labels_of(generation_attributes(streamed.request, "stream", streamed.generation_id))
    telemetry.instruments().failures.add(1, {**labels, "error.type": telemetry.error_type(error)})
    extra = {"stream": True, **({"partial_images_archived": list(partials)} if partials else {})}
    await service.failed(
        streamed.ticket, streamed.request, error, generation_id=streamed.generation_id, prefix=streamed.prefix, kind="sync",
        caller=streamed.caller, extra=extra,
    )  # fmt: skip


async def _archive_partial(service: ImageService, streamed: Streamed, index: int, data: bytes) -> str | None:
    """Archive a partial image beside where the final one goes (IMAGES_ARCHIVE_PARTIAL_IMAGES), as its caller's: its name.
    None when it is not an image or storage refused it (logged): the stream goes on, the final image is what was asked for."""
    content_type = sniff_content_type(data)
    if content_type is None:
        log.warning("a streamed partial image is not an image; not archived")
        return None
    name = f"{blob_base(streamed.prefix, streamed.generation_id)}/partial-{index}.{EXTENSIONS[content_type]}"
    metadata = {OWNER_METADATA: streamed.caller.id, "generation": streamed.generation_id, "partial": str(index)}
    try:
        async with storage_call("archiving a partial image"):
            await service.archive.container.upload_blob(name, data, overwrite=True, content_settings=ContentSettings(content_type=content_type), metadata=metadata)
    except ServiceError as error:
        log.warning("partial image %d of %s not archived: %s", index, streamed.generation_id, error.message)
        return None
    return name


# Relays whose caller left before the end: they run on to archive the image upstream is making (and billing).
UNATTENDED: set[asyncio.Task[None]] = set()


async def relay(
    service: ImageService, streamed: Streamed, link: Callable[[str], str], *, heartbeat: float = HEARTBEAT_SECONDS,
    unattended: set[asyncio.Task[None]] = UNATTENDED,
) -> AsyncIterator[bytes | memoryview]:
    """The events for the caller (see the module docstring); ``link(name)`` is an archived image's stable URL.

    Upstream is read by a task of its own, which hands each piece over and reads on once it was sent. If the caller goes away
    the task runs on without them (in ``unattended`` until it ends): the image is billed, so it is archived all the same.
    """
    outbox: asyncio.Queue[bytes | memoryview | None] = asyncio.Queue(maxsize=1)
    listening, taken = True, False

    def drain() -> None:
        """Nobody reads any more: what waits in the outbox is dropped, so a put waiting for it returns."""
        while not outbox.empty():
            outbox.get_nowait()
            outbox.task_done()

    async def put(item: bytes | memoryview | None) -> None:
        """Hand ``item`` to the caller and wait until it was sent: upstream is read on only then (one event in memory)."""
        if not listening:
            return
        await outbox.put(item)
        if not listening:  # the caller left while this waited for room
            drain()
            return
        await outbox.join()

    pump = asyncio.create_task(_pump(service, streamed, link, put, heartbeat))
    try:
        while (item := await outbox.get()) is not None:
            taken = True
            yield item
            taken = False
            outbox.task_done()
    finally:
        listening = False
        if taken:
            outbox.task_done()
        drain()
        if not pump.done():
            unattended.add(pump)
            pump.add_done_callback(unattended.discard)


Put = Callable[[bytes | memoryview | None], Awaitable[None]]


async def _pump(service: ImageService, streamed: Streamed, link: Callable[[str], str], put: Put, heartbeat: float) -> None:
    """Read upstream's events, archive the final image, hand the caller's events to ``put`` (None: the end)."""
    stream, keep = streamed.routed.result, service.settings.archive_partial_images
    partials, passing, archived = 0, None, list[str]()  # passing: the check (and with keep the decoding) of the partial image going out
    try:
        async for item in _with_heartbeats(stream, put, heartbeat, lambda: passing is None):  # noqa: B023 (read as it is now)
            if isinstance(item, SsePiece):  # a partial image, passed on as it arrives
                if passing is None:  # its first data line: the event starts going out
                    passing = ImageBodyReader(service.settings.max_image_bytes, max_images=1 if keep else 0)
                    await put(b"event: " + item.kind.encode() + b"\ndata: ")
                elif item.line:  # another data line of it (SSE joins them with a newline)
                    passing.feed(b"\n")
                    await put(b"\ndata: ")
                passing.feed(item.data)
                await put(item.data)
            elif item.passed:
                image = _check_partial(item.kind, passing)
                passing, partials = None, partials + 1
                await put(b"\n\n")
                if keep and image is not None and (name := await _archive_partial(service, streamed, partials - 1, image)):
                    archived.append(name)  # once the caller has it: the archive adds no wait to the stream
            elif item.kind.endswith(".completed"):
                generation, fields = await _archive(service, streamed, item, partials, archived)
                async for piece in _completed(item.kind, fields, generation, link):
                    await put(piece)
                return
            elif item.kind == "error":
                raise _upstream_error_event(item.data)
            else:
                log.warning("upstream stream: event %r ignored", item.kind[:60])
        raise upstream_error(f"The model service's stream ended without the final image. {NOT_REPEATED}")
    except Exception as exc:
        error = exc if isinstance(exc, ServiceError) else unexpected_error(exc, may_have_worked=True)
        if not isinstance(exc, ServiceError):
            log.exception("relaying an upstream stream failed unexpectedly")
        await _failed(service, streamed, error, archived)
        if passing is not None:
            await put(b"\n\n")  # ends the partial image that was going out
        await put(error_event(error))
    finally:
        await stream.aclose()
        await put(None)


async def _with_heartbeats(stream: UpstreamStream, put: Put, every: float, between_events: Callable[[], bool]) -> AsyncIterator[SseEvent | SsePiece]:
    """Upstream's events; while none comes for ``every`` seconds, a comment goes to the caller (between events only)."""
    events = stream.events().__aiter__()
    pending: asyncio.Future[SseEvent | SsePiece] = asyncio.ensure_future(events.__anext__())
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                if between_events():
                    await put(HEARTBEAT)
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            yield item
            pending = asyncio.ensure_future(events.__anext__())
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


def _check_partial(kind: str, passing: ImageBodyReader | None) -> bytes | None:
    """A partial image's event as upstream must send it: strict JSON of its type, its base64 valid; the image, when
    ``passing`` kept it decoded."""
    if passing is None:
        raise upstream_error(f"The model service streamed a partial image event without data. {NOT_REPEATED}")
    try:
        data = passing.result()
    except ValueError:
        raise upstream_error(f"The model service streamed a partial image that is not strict JSON. {NOT_REPEATED}") from None
    if not isinstance(data, dict) or data.get("type") != kind or not isinstance(data.get("partial_image_index"), int):
        raise upstream_error(f"The model service streamed a malformed partial image event. {NOT_REPEATED}")
    if any(value.too_large or value.invalid for value in passing.values):
        raise upstream_error(f"The model service streamed a partial image that is not valid base64. {NOT_REPEATED}")
    placeholder = data.get("b64_json")
    return passing.image(placeholder) if passing.max_images and isinstance(placeholder, str) else None


def _upstream_error_event(data: bytes | bytearray) -> ServiceError:
    """Upstream's ``error`` event as this service's error (its message scrubbed), final: the stream had started."""
    try:
        body = json.loads(data[:16384]) if len(data) <= 16384 else None
    except ValueError:
        body = None
    return stream_error(body)


def _archiving(args: Mapping[str, Any]) -> Mapping[str, object]:
    streamed: Streamed = args["streamed"]
    return generation_attributes(streamed.request, "stream", streamed.generation_id)


# The generation's span and metrics (kind "stream") over the part of a stream that makes its result, the archive;
# a failure is counted once, where its record is written (_record_failure).
@telemetry.traced("images.generate", telemetry.Steps(before=_archiving, after=lambda done: generated(done[0]), generation=True))
async def _archive(service: ImageService, streamed: Streamed, event: SseEvent, partials: int, archived: list[str]) -> tuple[Generation, dict[str, Any]]:
    """Decode the final image, archive it with its record (which names the partial images ``archived``); the record and
    upstream's other fields of the event."""
    request, decoded = streamed.request, event.decoded
    assert decoded is not None  # completed events are decoded while they arrive (shared/upstream/events.py)
    try:
        fields = decoded.result()
    except ValueError:
        raise upstream_error(f"The model service streamed a final image that is not strict JSON. {NOT_REPEATED}") from None
    placeholder = fields.get("b64_json") if isinstance(fields, dict) else None
    data = decoded.image(placeholder) if isinstance(placeholder, str) else None
    if data is None or not isinstance(fields, dict) or fields.get("type") != event.kind:
        raise upstream_error(f"The model service streamed a completed event without its image. {NOT_REPEATED}")
    content_type = sniff_content_type(data)
    if content_type is None:
        raise upstream_error("The model service streamed bytes that are not an image.")
    usage = fields.get("usage") if isinstance(fields.get("usage"), dict) else None
    created = fields.get("created_at")
    result = UpstreamResult(
        created=created if isinstance(created, int) and not isinstance(created, bool) and 0 < created < 2**34 else 0,
        images=[UpstreamImage(data, content_type, None)],
        usage=usage,
        attempts=streamed.routed.result.attempts,
        request_id=streamed.routed.result.request_id,
    )
    extra = {
        **streamed.routed.backend_fields(),
        "stream": {"partial_images": {"asked": request.partial_images, "sent": partials, **({"archived": archived} if archived else {})}},
        "cost": pricing.streamed_cost(request.family, usage, request.upstream_body, partials),
    }
    generation = await service.archive_result(
        streamed.ticket, request, result, generation_id=streamed.generation_id, prefix=streamed.prefix, kind="sync", caller=streamed.caller,
        extra=extra,
    )  # fmt: skip
    return generation, fields


async def _completed(kind: str, fields: dict[str, Any], generation: Generation, link: Callable[[str], str]) -> AsyncIterator[bytes]:
    """The completed event: upstream's fields, the archived image's url, name and cost, its base64 in slices."""
    image, data = generation.images[0], generation.result.images[0].data
    body = {**fields, "b64_json": _PLACEHOLDER, "url": link(image.name), "name": image.name, "cost": generation.record.get("cost")}
    head, _, tail = json.dumps(body, ensure_ascii=False).encode().partition(json.dumps(_PLACEHOLDER).encode())
    yield b"event: " + kind.encode() + b"\ndata: " + head + b'"'
    for start in range(0, len(data), B64_SLICE):
        yield pybase64.b64encode(data[start : start + B64_SLICE])
    yield b'"' + tail + b"\n\n"
