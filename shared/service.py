"""The one generation path both entries use: call upstream, archive, describe.

``ImageService`` works with the clients of the :class:`~shared.runtime.Runtime` that
owns it: the runtime opens them inside its event loop and attaches them, and detaches
them when it closes them. Using the service while its runtime is closed is an error
that says so, never a client created on the side.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import pybase64
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared import telemetry
from shared.archive import Archive, ArchivedImage
from shared.models import ImageRequest
from shared.settings import Settings
from shared.upstream import UpstreamClient, UpstreamImage, UpstreamResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clients:
    """What a runtime opened for the service, the jobs and the routes (all bound to its event loop)."""

    upstream: UpstreamClient
    blobs: BlobServiceClient
    queues: QueueServiceClient
    archive: Archive


@dataclass
class Generation:
    """A finished, archived generation."""

    id: str
    request: ImageRequest
    result: UpstreamResult
    images: list[ArchivedImage]
    record: dict[str, Any]


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
    def upstream(self) -> UpstreamClient:
        return self.clients.upstream

    @telemetry.generation
    async def generate(
        self,
        request: ImageRequest,
        *,
        generation_id: str,
        prefix: str,
        timeout: float,
        budget: float,
        kind: str = "sync",
    ) -> Generation:
        """Call upstream and archive every image with its record before returning.

        A synchronous caller is waiting: its record is written alongside the images.
        A job's record is written after them, because the job handler reads an existing
        record as "finished" when a message comes back (see shared/archive.py).
        """
        archive = self.archive
        await archive.ensure_container()  # fail on storage before paying for an image
        result = await self.upstream.generate(request, timeout=timeout, budget=budget)
        record = build_record(generation_id, kind, request, result)
        images = [(i.data, i.content_type) for i in result.images]
        archived, written = await archive.store(prefix, generation_id, images, record, concurrent=kind == "sync")
        return Generation(generation_id, request, result, archived, written)

    async def recover(self, request: ImageRequest, *, generation_id: str, prefix: str, kind: str = "job") -> dict[str, Any] | None:
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
        record = build_record(generation_id, kind, request, result)
        record["recovered"] = "record rebuilt from the archived images after an interrupted delivery"
        return await archive.write_record(prefix, generation_id, record, archived)

    async def response_body(self, generation: Generation) -> dict[str, Any]:
        """The Azure OpenAI response: data[].url links to the archived copy; b64_json when asked."""
        data = []
        for image, upstream_image in zip(generation.images, generation.result.images, strict=True):
            item: dict[str, Any] = {"url": await self.archive.link(image.name)}
            if generation.request.response_format == "b64_json":
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


def build_record(generation_id: str, kind: str, request: ImageRequest, result: UpstreamResult) -> dict[str, Any]:
    """The JSON record written beside the images (the archive adds names, sizes and hashes)."""
    revised = next((i.revised_prompt for i in result.images if i.revised_prompt), None)
    return {
        "id": generation_id,
        "kind": kind,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "upstream_created": result.created,
        "deployment": request.deployment,
        "model": request.family,
        "prompt": request.asked.get("prompt"),
        "revised_prompt": revised,
        "parameters": {"asked": request.asked, "sent": request.upstream_body},
        "translations": request.translations,
        "response_format": request.response_format,
        "usage": result.usage,
        "upstream_attempts": result.attempts,
        "images": [
            {"revised_prompt": i.revised_prompt, "content_filter_results": i.content_filter_results} for i in result.images
        ],
    }
