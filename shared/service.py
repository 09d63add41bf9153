"""The one generation path both entries use: call upstream, archive, describe.

``ImageService`` works with the clients of the :class:`~shared.runtime.Runtime` that
owns it: the runtime opens them inside its event loop and attaches them, and detaches
them when it closes them. Using the service while its runtime is closed is an error
that says so, never a client created on the side.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pybase64
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared import audit, telemetry
from shared.archive import Archive, ArchivedImage, blob_base
from shared.callers import Caller
from shared.callers.books import Books, Ticket
from shared.callers.scope import ScopeKey
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest, rules_of
from shared.models.edits import edit_record_fields
from shared.pool.router import Pools, Routed
from shared.pricing import cost, recorded_usd
from shared.settings import Settings
from shared.upstream import UpstreamClient, UpstreamImage, UpstreamResult

TRANSLATIONS_HEADER = "x-images-translations"
# A budget hold outlives its call's deadline by this much before it expires (and is charged): the archive's time.
HOLD_MARGIN_SECONDS = 120.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clients:
    """What a runtime opened for the service, the jobs and the routes (all bound to its event loop)."""

    upstream: UpstreamClient
    blobs: BlobServiceClient
    queues: QueueServiceClient
    archive: Archive
    scope: ScopeKey  # the app's secret, for names a caller cannot compute for another (shared/callers/scope.py)
    books: Books  # the callers' budgets and the index of records (shared/callers/books.py)
    pools: Pools | None = None  # the deployment pools (None: every deployment on ``upstream``)


@dataclass
class Generation:
    """A finished, archived generation."""

    id: str
    request: ImageRequest
    result: UpstreamResult
    images: list[ArchivedImage]
    record: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # the caller's x-ratelimit-*


# What a generation puts into telemetry (shared.telemetry.traced): its attributes and metrics.


def generation_attributes(request: ImageRequest, kind: str, generation_id: str) -> dict[str, object]:
    """The attributes of a generation's span (and its metrics' labels): deployment, family, kind, id, n."""
    return {
        "images.deployment": request.deployment,
        "images.model_family": request.family,
        "images.kind": kind,
        "images.generation_id": generation_id,
        "images.n": request.n,
    }


def _generating(args: Mapping[str, Any]) -> Mapping[str, object]:
    return generation_attributes(args["request"], args["kind"], args["generation_id"])


def _tokens(usage: Mapping[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def generated(generation: Generation) -> Mapping[str, object]:
    """The generation's attributes, and its metrics: one generation, its images, tokens and cost."""
    images, result = generation.images, generation.result
    usage, usd = result.usage or {}, recorded_usd(generation.record)
    tokens = {"input": _tokens(usage, "input_tokens"), "output": _tokens(usage, "output_tokens")}
    counters, labels = telemetry.instruments(), telemetry.labels_of({})
    counters.generations.add(1, labels)
    counters.images.add(len(images), labels)
    for kind, count in tokens.items():
        if count is not None:
            counters.tokens.add(count, {**labels, "gen_ai.token.type": kind})
    if usd is not None:
        counters.cost.add(usd, {**labels, "images.cost.currency": "USD"})
    return {
        "images.count": len(images),
        "images.bytes": sum(image.size for image in images),
        "images.upstream_attempts": result.attempts,
        "gen_ai.usage.input_tokens": tokens["input"],
        "gen_ai.usage.output_tokens": tokens["output"],
        "images.revised_prompt": next((i.revised_prompt for i in result.images if i.revised_prompt), None),
        "images.cost": usd,
        "images.cost.currency": "USD" if usd is not None else None,
    }


def new_generation_id() -> str:
    return uuid.uuid4().hex


def sync_prefix(now: dt.datetime | None = None) -> str:
    """Synchronous generations are filed by day, so the container browses well."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%d")


class ImageService:
    """Everything a request or a job needs, shared by the HTTP app and the queue handler."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: Clients | None = None

    def attach(self, clients: Clients | None) -> None:
        """Use ``clients`` from now on (the runtime, once it has opened them), or none (once it closes them)."""
        self._clients = clients

    @property
    def clients(self) -> Clients:
        """The open clients; RuntimeError while the runtime is not open."""
        if self._clients is None:
            raise RuntimeError("the runtime is not open: use `async with runtime:` or `await runtime.open()` in this event loop first")
        return self._clients

    # The clients as the jobs and the routes use them.
    @property
    def blobs(self) -> BlobServiceClient:
        return self.clients.blobs

    @property
    def queues(self) -> QueueServiceClient:
        return self.clients.queues

    @property
    def archive(self) -> Archive:
        return self.clients.archive

    @property
    def scope(self) -> ScopeKey:
        return self.clients.scope

    @property
    def books(self) -> Books:
        return self.clients.books

    @property
    def upstream(self) -> UpstreamClient:
        return self.clients.upstream

    @property
    def pools(self) -> Pools:
        """The deployment pools (every deployment on ``upstream`` when there are none)."""
        return self.clients.pools or Pools(self.upstream)

    async def generate(
        self,
        request: ImageRequest,
        *,
        generation_id: str,
        prefix: str,
        deadline: Deadline,
        budget: float,
        kind: str = "sync",
        caller: Caller,
    ) -> Generation:
        """Generate ``request`` through its deployment's pool within ``deadline`` and archive every image with its record (:meth:`produce`).

        A job (``kind="job"``) in a pool waits in process only briefly for a backend with room
        (:class:`~shared.pool.router.PoolThrottled` otherwise).
        """
        generate = functools.partial(self.pools.generate, request, deadline=deadline, budget=budget, job=kind == "job")
        return await self.produce(request, generate, generation_id=generation_id, prefix=prefix, kind=kind, caller=caller, wait=deadline.remaining())

    @telemetry.traced("images.generate", telemetry.Steps(before=_generating, after=generated, failures=True, generation=True))
    async def produce(
        self,
        request: ImageRequest,
        call: Callable[[], Awaitable[Routed]],
        *,
        generation_id: str,
        prefix: str,
        kind: str = "sync",
        caller: Caller,
        wait: float,
        input_pixels: Sequence[int] = (),
    ) -> Generation:
        """The one way a generation or an edit is made: ``call`` upstream (through the pool), then archive
        every image with its record before returning.

        Before the call, the caller's budget holds the request's worst case (``input_pixels``: an
        edit's inputs) for at most ``wait`` seconds and a margin, or refuses it (403, 429), and a
        synchronous generation's index entry is written while upstream works (shared/callers/books.py).
        A synchronous caller is waiting: its record is written alongside the images.
        A job's record is written after them, because the job handler reads an existing
        record as "finished" when a message comes back (see shared/archive.py). A call that
        reached upstream and failed leaves a failure record (shared/audit.py) and raises.
        ``caller``: who asked, as the platform vouches (shared/callers): the records name it, and its
        images, record and failure record carry its id (so only it, and operators, see them).
        """
        archive = self.archive
        await archive.ensure_container()  # fail on storage before paying for an image
        ticket = await self.books.open(
            caller, request, generation_id=generation_id, prefix=prefix, kind=kind, ttl=wait + HOLD_MARGIN_SECONDS, input_pixels=input_pixels
        )
        try:
            routed = await call()
        except ServiceError as error:
            await self.failed(ticket, request, error, generation_id=generation_id, prefix=prefix, kind=kind, caller=caller)
            raise
        extra = routed.record_fields(request)
        return await self.archive_result(ticket, request, routed.result, generation_id=generation_id, prefix=prefix, kind=kind, caller=caller, extra=extra)

    async def failed(
        self, ticket: Ticket, request: ImageRequest, error: ServiceError, *, generation_id: str, prefix: str, kind: str, caller: Caller,
        extra: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """A call that failed: its hold ends by the one rule (given back when upstream did no work, else charged at its
        worst case), and a call that reached upstream leaves a failure record (``extra``: what it adds)."""
        reached = audit.reached_upstream(error)
        await ticket.failed(error, reached_upstream=reached)
        if reached:
            now = dt.datetime.now(dt.UTC)
            failure = audit.failure_record(generation_id, kind, request, error, settings=self.settings, caller=caller, now=now) | dict(extra or {})
            await audit.write_failure(self.archive, blob_base(prefix, generation_id), failure, now)

    async def archive_result(
        self, ticket: Ticket, request: ImageRequest, result: UpstreamResult, *, generation_id: str, prefix: str, kind: str, caller: Caller,
        extra: dict[str, Any],
    ) -> Generation:  # fmt: skip
        """Archive every image of ``result`` with its record (``extra``: what it adds, the cost among it) while the hold
        settles at that cost (a generation's, an edit's or a stream's final image)."""
        record = self.record(request, result, generation_id=generation_id, kind=kind, caller=caller, extra=extra)
        images = [(i.data, i.content_type) for i in result.images]
        store = functools.partial(self.archive.store, prefix, generation_id, images, record, concurrent=kind == "sync")
        archived, written = await ticket.archived(store, record["cost"].get("usd"), len(result.images))
        return Generation(generation_id, request, result, archived, written, ticket.headers)

    def record(
        self, request: ImageRequest, result: UpstreamResult, *, generation_id: str, kind: str, caller: Caller, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The record of a generation or an edit (``extra``: the pool's backend and attempts); the cost computed when absent."""
        record = build_record(generation_id, kind, request, result, settings=self.settings, caller=caller) | (extra or {})
        record.setdefault("cost", cost(request.family, result.usage, request.upstream_body, len(result.images)))
        return record

    async def recover(self, request: ImageRequest, *, generation_id: str, prefix: str, caller: Caller, kind: str = "job") -> dict[str, Any] | None:
        """Finish a generation whose images were archived but whose record was not: write the record, return it."""
        archive = self.archive
        found = await archive.recover(prefix, generation_id)
        if found is None:
            return None
        archived, metadata = found
        result = UpstreamResult(
            created=next((m["created"] for m in metadata if m.get("created")), 0),
            images=[UpstreamImage(b"", a.content_type, m.get("revised_prompt")) for a, m in zip(archived, metadata, strict=True)],
            usage=next((m["usage"] for m in metadata if m.get("usage")), None),
        )
        record = self.record(request, result, generation_id=generation_id, kind=kind, caller=caller)
        # Which backend made the images was in memory only; the record says it is not known.
        record["recovered"] = "record rebuilt from the archived images after an interrupted delivery (the serving backend is not known)"
        return await archive.write_record(prefix, generation_id, record, archived)

    async def response_body(self, generation: Generation) -> dict[str, Any]:
        """The answer as the deployment's own model gives it: ``b64_json`` (plus ``url``) or ``url`` (see :func:`answer_format`).

        ``url`` always links to the archived copy, so clients written for either model family work.
        """
        with_bytes = answer_format(generation.request) == "b64_json"
        data = []
        for image, upstream_image in zip(generation.images, generation.result.images, strict=True):
            item: dict[str, Any] = {"url": await self.archive.link(image.name)}
            if with_bytes:
                item["b64_json"] = pybase64.b64encode(upstream_image.data).decode("ascii")
            if upstream_image.revised_prompt:
                item["revised_prompt"] = upstream_image.revised_prompt
            if upstream_image.content_filter_results:
                item["content_filter_results"] = upstream_image.content_filter_results
            if upstream_image.prompt_filter_results:
                item["prompt_filter_results"] = upstream_image.prompt_filter_results
            data.append(item)
        body: dict[str, Any] = {"created": generation.result.created, "data": data}
        if generation.result.usage:
            body["usage"] = generation.result.usage
        return body


def answer_format(request: ImageRequest) -> Literal["url", "b64_json"]:
    """What the answer carries: the caller's ``response_format`` when given, else what the deployment's model answers.

    gpt-image models always answer base64, so a gpt-image deployment answers ``b64_json`` (with
    ``url`` beside it) by default; dall-e-3 answered ``url`` by default, and so does its deployment.
    """
    if "response_format" in request.asked:
        return request.response_format
    return "b64_json" if rules_of(request.family).api == "gpt-image" else "url"


def translations_header(request: ImageRequest) -> dict[str, str]:
    """``x-images-translations``: every translation made, as a JSON array of the record's sentences ([] for none)."""
    return {TRANSLATIONS_HEADER: json.dumps(request.translations, ensure_ascii=True)}


def build_record(
    generation_id: str,
    kind: str,
    request: ImageRequest,
    result: UpstreamResult,
    *,
    settings: Settings,
    caller: Caller,
) -> dict[str, Any]:
    """The JSON record written beside the images (the archive adds names, sizes and hashes).

    Per image, ``format``, ``width`` and ``height`` are read from the bytes (shared/audit.py); a record
    rebuilt from archived blobs (``recover``) has no bytes at hand and leaves them out.
    """
    now = dt.datetime.now(dt.UTC)
    revised = next((i.revised_prompt for i in result.images if i.revised_prompt), None)
    return {
        "id": generation_id,
        "kind": kind,
        "outcome": "succeeded",
        "created": now.isoformat(),
        "upstream_created": result.created,
        "deployment": request.deployment,
        "model": request.family,
        "prompt": request.asked.get("prompt"),
        "revised_prompt": revised,
        "parameters": {"asked": request.asked, "sent": request.upstream_body},
        "translations": request.translations,
        "response_format": answer_format(request) if kind == "sync" else "url",  # a job's result carries links only
        "caller": caller.record(),
        "upstream": audit.upstream_record(settings, result.request_id, result.attempts),
        "usage": result.usage,
        "upstream_attempts": result.attempts,
        "retention": audit.retention_record(settings, now),
        "images": [_image_record(i) for i in result.images],
        **edit_record_fields(request),  # an edit's record names its inputs (shared/models/edits.py)
    }


def _image_record(image: UpstreamImage) -> dict[str, Any]:
    facts = audit.image_facts(image.data) if image.data else None
    return {
        "revised_prompt": image.revised_prompt,
        "content_filter_results": image.content_filter_results,
        "prompt_filter_results": image.prompt_filter_results,
        **(facts.as_record() if facts else {}),
    }
