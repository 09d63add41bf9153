"""The one generation path both entries use: call upstream, archive, describe.

``ImageService`` owns the process-wide clients (HTTP pool, Blob/Queue clients,
credentials). They are created lazily on first use inside the running event
loop, never at import, and kept per event loop because aiohttp/httpx clients
belong to the loop that made them (tests run the app in several loops).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared import credentials
from shared.archive import Archive, ArchivedImage, storage_error
from shared.models import ImageRequest
from shared.settings import Settings
from shared.upstream import UpstreamClient, UpstreamImage, UpstreamResult

log = logging.getLogger(__name__)

# The SDK default (10 retries, exponential) keeps a caller waiting minutes when
# storage is down; a few quick retries cover blips, and then the caller hears 503
# (and the queue redelivers) instead.
# (The storage SDKs' ExponentialRetry starts at 15 s; these kwargs reach it.)
STORAGE_RETRY: dict[str, Any] = {"initial_backoff": 0.3, "increment_base": 1.6, "random_jitter_range": 0.3, "retry_total": 3, "connection_timeout": 10}


@dataclass
class Resources:
    """Clients bound to one event loop."""

    upstream: UpstreamClient
    blobs: BlobServiceClient
    queues: QueueServiceClient
    archive: Archive
    token_credential: Any | None

    async def close(self) -> None:
        await self.upstream.close()
        if self.upstream.auth is not None:
            await self.upstream.auth.close()
        await self.blobs.close()
        await self.queues.close()
        if self.token_credential is not None:
            await self.token_credential.close()


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

    def __init__(self, settings: Settings, *, storage_options: dict[str, Any] | None = None, key_vault_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        # Extra storage client options, e.g. connection_verify=<CA file> for a TLS stand-in in tests.
        self.storage_options = dict(storage_options or {})
        self.key_vault_options = dict(key_vault_options or {})  # the same for the Key Vault stand-in
        self._resources: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Resources] = weakref.WeakKeyDictionary()

    def resources(self) -> Resources:
        """This loop's clients, created on first use (no I/O happens here)."""
        loop = asyncio.get_running_loop()
        found = self._resources.get(loop)
        if found is None:
            found = self._create_resources()
            self._resources[loop] = found
        return found

    def _create_resources(self) -> Resources:
        s = self.settings
        token_credential = None
        if s.storage.uses_identity or s.auth_mode in ("keyvault", "entra"):
            token_credential = credentials.create_token_credential(s)
        options = {**STORAGE_RETRY, **self.storage_options}
        if s.storage.connection_string:
            blobs = BlobServiceClient.from_connection_string(s.storage.connection_string, **options)
            queues = QueueServiceClient.from_connection_string(s.storage.connection_string, **options)
        else:
            storage_credential = token_credential
            if s.storage.client_id and s.storage.client_id != s.client_id:
                # AzureWebJobsStorage__clientId names another user-assigned identity than AZURE_CLIENT_ID.
                storage_credential = credentials.create_token_credential(s, client_id=s.storage.client_id)
            blobs = BlobServiceClient(s.storage.blob_url, credential=storage_credential, **options)
            queues = QueueServiceClient(s.storage.queue_url, credential=storage_credential, **options)
        auth = credentials.create_upstream_auth(s, token_credential, key_vault_options=self.key_vault_options)
        return Resources(
            upstream=UpstreamClient(s, auth),
            blobs=blobs,
            queues=queues,
            archive=Archive(s, blobs),
            token_credential=token_credential,
        )

    # The clients as the jobs and the routes use them (the composition root opens them).
    @property
    def blobs(self) -> BlobServiceClient:
        return self.resources().blobs

    @property
    def queues(self) -> QueueServiceClient:
        return self.resources().queues

    @property
    def archive(self) -> Archive:
        return self.resources().archive

    @property
    def upstream(self) -> UpstreamClient:
        return self.resources().upstream

    async def close(self) -> None:
        """Close this loop's clients."""
        loop = asyncio.get_running_loop()
        found = self._resources.pop(loop, None)
        if found is not None:
            await found.close()

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
        """Call upstream and archive every image with its record before returning."""
        res = self.resources()
        await res.archive.ensure_container()  # fail on storage before paying for an image
        result = await res.upstream.generate(request, timeout=timeout, budget=budget)
        record = build_record(generation_id, kind, request, result)
        archived, full_record = await res.archive.store(
            prefix, generation_id, [(i.data, i.content_type) for i in result.images], record
        )
        return Generation(generation_id, request, result, archived, full_record)

    async def recover(self, request: ImageRequest, *, generation_id: str, prefix: str, kind: str = "job") -> dict[str, Any] | None:
        """Finish a generation whose images were archived but whose record was not: write the record, return it."""
        archive = self.resources().archive
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
        try:
            return await archive.write_record(prefix, generation_id, record, archived)
        except AzureError as exc:
            raise storage_error(exc, "writing a record") from None

    async def response_body(self, generation: Generation) -> dict[str, Any]:
        """The Azure OpenAI response: data[].url links to the archived copy; b64_json when asked."""
        res = self.resources()
        data = []
        for image, upstream_image in zip(generation.images, generation.result.images, strict=True):
            item: dict[str, Any] = {"url": await res.archive.link(image.name)}
            if generation.request.response_format == "b64_json":
                item["b64_json"] = base64.b64encode(upstream_image.data).decode()
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
