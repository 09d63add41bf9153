"""Blob Storage: every image and a JSON record beside it, and links to them.

Layout in the images container (private)::

    {prefix}/{id}/{index}.{png|jpg}   the image bytes, content type set; metadata: sha256, index, count,
                                      and what rebuilding the record needs (created, usage, revised prompt)
    {prefix}/{id}/record.json         the record: names, sizes and hashes of every image; metadata: count

Every blob carries the id of the caller it was made for (metadata ``caller``,
:data:`OWNER_METADATA`), so a read can tell whose it is from the one request that
finds it (:meth:`Archive.owner`); a blob written before callers were known has none,
and only operators see it (shared/callers).

Names come from ids, never from the prompt. Links are read-only SAS URLs: a user
delegation SAS when the app authenticates with an identity, a blob-scoped
service SAS signed with the account key on Azurite (connection strings).

The rule: a record never survives without its images. Each blob is written whole
or not at all (one Put Blob), so the question is only which blobs exist. A
generation is written in one of two orders (:meth:`Archive.store`):

- **images, then the record** (jobs): the record's existence means the generation is
  complete, which the job handler relies on when a message is delivered again
  (``read_record``). A crash before the record leaves images that carry their
  record's content in metadata; ``recover`` finds them all and the record is
  rewritten from them, without a second generation.
- **all at once** (synchronous requests, where a caller is waiting): the record is
  uploaded while the images upload, saving a storage round trip. Every upload is
  awaited to its answer before anything else happens, so a cleanup never races an
  upload still in flight. If any upload fails, every blob that may have landed is
  deleted, the record first (an upload that never reached storage wrote nothing);
  the caller gets 503. A crash in the middle, a cancelled request (its uploads in
  flight cannot be waited for), or a cleanup that storage refuses can leave a record
  whose images are not all there: its metadata says how many it needs, and
  :meth:`Archive.sweep` finds and removes such generations under a prefix (e.g. one
  day), leaving any written recently alone (they may still be in flight). Nothing runs
  ``sweep`` on a schedule yet: a timer function or an operator would. Images without a
  record (a crash before the record landed) are harmless: nothing points at them.

In either order a failure removes what may have landed, the record first.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobSasPermissions, ContentSettings, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from shared import telemetry
from shared.errors import storage_call
from shared.settings import Settings

log = logging.getLogger(__name__)

RECORD_NAME = "record.json"
OWNER_METADATA = "caller"  # blob metadata: the Caller.id a blob was made for
# Used with fullmatch: $ with match() would accept a trailing newline. [0-9], not \d (other scripts' digits).
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# An image (<n>, or partial-<n>: a partial image of a stream, IMAGES_ARCHIVE_PARTIAL_IMAGES) or a record of a generation.
_BLOB_PATH = re.compile(r"(?:[A-Za-z0-9_-]{1,64}/){1,3}(?:(?:partial-)?[0-9]{1,2}\.(?:png|jpg|webp)|record\.json)")
# Inputs of edits, content-addressed per caller (shared/inputs.py): inputs/<64 hex>.<png|jpg|webp>.
INPUT_PATH = re.compile(r"inputs/[0-9a-f]{64}\.(?:png|jpg|webp)")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_IMAGE_CACHE_CONTROL = "private, max-age=31536000, immutable"


def is_safe_id(value: str) -> bool:
    """Ids that may become part of a blob name: letters, digits, - and _, at most 64."""
    return bool(_SAFE_ID.fullmatch(value))


def is_archive_path(name: str) -> bool:
    """True for names this archive writes (guards the stable link route against arbitrary reads)."""
    return bool(_BLOB_PATH.fullmatch(name) or INPUT_PATH.fullmatch(name)) and ".." not in name


def blob_base(prefix: str, generation_id: str) -> str:
    """Where a generation's blobs live: ``{prefix}/{id}/`` (prefix: a day, or ``jobs``), or ``{id}/`` without a prefix."""
    return f"{prefix}/{generation_id}" if prefix else generation_id


@dataclass(frozen=True)
class ArchivedImage:
    """One image as stored."""

    name: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class _ImageUpload:
    """One image about to be written: where, what, and the metadata that lets ``recover`` rebuild the record."""

    image: ArchivedImage
    data: bytes
    metadata: dict[str, str]


def _image_metadata(generation_id: str, index: int, count: int, digest: str, record: dict[str, Any], detail: dict[str, Any]) -> dict[str, str]:
    """Blob metadata (ASCII, < 8 KiB in all): enough to rebuild the record if it was never written."""
    meta = {"generation": generation_id, "index": str(index), "count": str(count), "sha256": digest, **_owner(record)}
    if record.get("upstream_created") is not None:
        meta["created"] = str(record["upstream_created"])
    if record.get("usage"):
        meta["usage"] = base64.b64encode(json.dumps(record["usage"]).encode()).decode()
    revised = detail.get("revised_prompt")
    if isinstance(revised, str):
        encoded = base64.b64encode(revised.encode()).decode()
        if len(encoded) <= 6000:
            meta["revisedprompt"] = encoded
    return meta


def _owner(record: dict[str, Any]) -> dict[str, str]:
    """The metadata naming the record's caller (none for a record without one)."""
    caller = record.get("caller")
    return {OWNER_METADATA: caller["id"]} if isinstance(caller, dict) and isinstance(caller.get("id"), str) else {}


def _read_metadata(meta: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"created": int(meta["created"]) if meta.get("created", "").isdigit() else None}
    if meta.get("usage"):
        out["usage"] = json.loads(base64.b64decode(meta["usage"]))
    if meta.get("revisedprompt"):
        out["revised_prompt"] = base64.b64decode(meta["revisedprompt"]).decode()
    return out


async def ensure_container(container: ContainerClient, what: str) -> None:
    """Create a private container if missing. Infra creates it in Azure, and an identity
    whose role is scoped to the container may not create one (403): then it is used as is."""
    async with storage_call(f"creating the {what} container"):
        try:
            await container.create_container()
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            log.info("no permission to create the %s container; assuming infrastructure made it", what)


def full_record(record: dict[str, Any], archived: list[ArchivedImage]) -> dict[str, Any]:
    """The record as written: each image's details plus its name, size, hash and content type."""
    details = record.get("images") or []
    written = dict(record)
    written["images"] = [
        {**(details[i] if i < len(details) else {}), "name": a.name, "bytes": a.size, "sha256": a.sha256, "content_type": a.content_type}
        for i, a in enumerate(archived)
    ]
    return written


async def _all_settled(uploads: list[Awaitable[None]]) -> None:
    """Run ``uploads`` at once and wait for every answer, then raise the first failure.

    Siblings are not cancelled on a failure: a cancelled request may still land after
    the cleanup's delete, and the cleanup must come after every upload has settled.
    """
    outcomes = await asyncio.gather(*uploads, return_exceptions=True)
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None:
        raise failure


def _archiving(generation_id: str, images: list[tuple[bytes, str]], concurrent: bool) -> dict[str, object]:
    """What a write of the archive puts into telemetry (shared.telemetry.traced)."""
    return {"images.generation_id": generation_id, "images.count": len(images), "images.bytes": sum(len(d) for d, _ in images), "archive.concurrent": concurrent}


class Archive:
    """Writes images and records to the images container and signs read links."""

    def __init__(self, settings: Settings, service: BlobServiceClient) -> None:
        self.settings = settings
        self.service = service
        self.container = service.get_container_client(settings.images_container)
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_expiry: dt.datetime | None = None
        self._delegation_lock = asyncio.Lock()
        self._ready = False

    async def ensure_container(self) -> None:
        """Create the private images container once per process (infra creates it in Azure)."""
        if self._ready:
            return
        await ensure_container(self.container, "images")
        self._ready = True

    def _plan(self, base: str, generation_id: str, images: list[tuple[bytes, str]], record: dict[str, Any]) -> list[_ImageUpload]:
        details = record.get("images") or []
        planned = []
        for index, (data, content_type) in enumerate(images):
            digest = hashlib.sha256(data).hexdigest()
            detail = details[index] if index < len(details) else {}
            planned.append(
                _ImageUpload(
                    ArchivedImage(f"{base}/{index}.{EXTENSIONS.get(content_type, 'bin')}", len(data), digest, content_type),
                    data,
                    _image_metadata(generation_id, index, len(images), digest, record, detail),
                )
            )
        return planned

    @telemetry.traced("archive.write", telemetry.Steps(before=lambda args: _archiving(args["generation_id"], args["images"], args["concurrent"])))
    async def store(
        self,
        prefix: str,
        generation_id: str,
        images: list[tuple[bytes, str]],
        record: dict[str, Any],
        *,
        concurrent: bool = False,
    ) -> tuple[list[ArchivedImage], dict[str, Any]]:
        """Write each (bytes, content_type) and the record naming them; return the images and the record as written.

        ``concurrent``: the record is uploaded while the images upload (synchronous
        requests); otherwise the images first, then the record (jobs). On any failure
        the blobs that may have landed are removed, the record first, and a storage
        failure raises the 503 ServiceError. See the module docstring for crashes.
        """
        await self.ensure_container()
        base = blob_base(prefix, generation_id)
        planned = self._plan(base, generation_id, images, record)
        archived = [p.image for p in planned]
        written = full_record(record, archived)
        record_name = f"{base}/{RECORD_NAME}"
        uploads = [(p.image.name, functools.partial(self._put_image, p)) for p in planned]
        uploads.append((record_name, functools.partial(self._put_record, base, written, len(archived))))
        maybe_written: set[str] = set()

        async def upload(name: str, put: Callable[[], Awaitable[None]]) -> None:
            maybe_written.add(name)
            try:
                await put()
            except ServiceRequestError:
                maybe_written.discard(name)  # it never reached storage (e.g. storage is down): nothing to remove
                raise

        try:
            async with storage_call("archiving the image"):
                if concurrent:
                    await _all_settled([upload(name, put) for name, put in uploads])
                else:
                    for name, put in uploads:
                        await upload(name, put)
        except (Exception, asyncio.CancelledError):
            await self._remove([name for name in (record_name, *(a.name for a in archived)) if name in maybe_written])
            raise
        return archived, written

    async def _put_image(self, upload: _ImageUpload) -> None:
        await self.container.upload_blob(
            upload.image.name,
            upload.data,
            overwrite=True,
            content_settings=ContentSettings(content_type=upload.image.content_type, cache_control=_IMAGE_CACHE_CONTROL),
            metadata=upload.metadata,
        )

    async def _put_record(self, base: str, written: dict[str, Any], count: int) -> None:
        # The count in metadata lets sweep() tell a record from its listing whether all its images are there.
        await self.container.upload_blob(
            f"{base}/{RECORD_NAME}",
            json.dumps(written, ensure_ascii=False, indent=2).encode(),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
            metadata={"count": str(count), **_owner(written)},
        )

    async def write_record(self, prefix: str, generation_id: str, record: dict[str, Any], archived: list[ArchivedImage]) -> dict[str, Any]:
        """Write the record naming each archived image (finishing a recovered generation); return it as written."""
        written = full_record(record, archived)
        async with storage_call("writing a record"):
            await self._put_record(blob_base(prefix, generation_id), written, len(archived))
        return written

    async def recover(self, prefix: str, generation_id: str) -> tuple[list[ArchivedImage], list[dict[str, Any]]] | None:
        """Images of a generation whose record was never written: all of them, with their metadata, or None."""
        found: dict[int, tuple[ArchivedImage, dict[str, Any]]] = {}
        expected = None
        async with storage_call("looking for archived images"):
            try:
                async for blob in self.container.list_blobs(name_starts_with=f"{blob_base(prefix, generation_id)}/", include=["metadata"]):
                    meta = blob.metadata or {}
                    if "index" not in meta or "count" not in meta:
                        continue
                    expected = int(meta["count"])
                    content_type = blob.content_settings.content_type or "application/octet-stream"
                    found[int(meta["index"])] = (ArchivedImage(blob.name, int(blob.size), meta.get("sha256", ""), content_type), _read_metadata(meta))
            except ResourceNotFoundError:
                return None  # not even the container yet
        if expected is None or sorted(found) != list(range(expected)):
            return None
        return [found[i][0] for i in range(expected)], [found[i][1] for i in range(expected)]

    async def sweep(self, prefix: str, *, written_before: dt.datetime) -> list[str]:
        """Remove every generation under ``prefix`` whose record names images that are not all there.

        Only records last written before ``written_before`` are judged: a younger one may
        belong to a write still in flight. The record goes first, then the images.
        Returns the generations removed (``{prefix}/{id}``).
        """
        records: dict[str, tuple[dt.datetime, int]] = {}
        blobs: dict[str, list[str]] = {}
        indexes: dict[str, set[int]] = {}
        async with storage_call("looking for unfinished generations"):
            async for blob in self.container.list_blobs(name_starts_with=f"{prefix}/", include=["metadata"]):
                base, _, leaf = blob.name.rpartition("/")
                meta = blob.metadata or {}
                blobs.setdefault(base, []).append(blob.name)
                if leaf == RECORD_NAME and meta.get("count", "").isdigit():
                    records[base] = (blob.last_modified, int(meta["count"]))
                elif meta.get("index", "").isdigit():
                    indexes.setdefault(base, set()).add(int(meta["index"]))
        removed = []
        for base, (modified, count) in sorted(records.items()):
            if modified < written_before and not indexes.get(base, set()) >= set(range(count)):
                await self._remove([f"{base}/{RECORD_NAME}", *(n for n in blobs[base] if not n.endswith(RECORD_NAME))])
                removed.append(base)
        return removed

    async def _remove(self, names: list[str]) -> None:
        """Delete ``names`` in order (best effort): what is already gone is fine, what fails is logged."""
        for name in names:
            try:
                await self.container.delete_blob(name)
            except ResourceNotFoundError:
                pass
            except AzureError:
                log.warning("could not remove %s after a failed archive; sweep() removes what is left", name)

    async def read_record(self, prefix: str, generation_id: str) -> dict[str, Any] | None:
        """The record of a generation, or None if it was never completed."""
        async with storage_call("reading a record"):
            try:
                stream = await self.container.download_blob(f"{blob_base(prefix, generation_id)}/{RECORD_NAME}")
                data = await stream.readall()
            except ResourceNotFoundError:
                return None
        record: dict[str, Any] = json.loads(data)
        return record

    @storage_call("looking up an image")
    async def owner(self, name: str) -> tuple[bool, str | None]:
        """(whether the blob ``name`` exists, the caller id it was made for, or None when it names none):
        one request, whoever asks, so an answer for another caller's blob takes what one for a missing blob takes."""
        try:
            properties = await self.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return False, None
        return True, (properties.metadata or {}).get(OWNER_METADATA)

    async def link(self, name: str) -> str:
        """A read-only SAS URL for one blob, valid for the configured lifetime."""
        now = dt.datetime.now(dt.UTC)
        expiry = now + dt.timedelta(seconds=self.settings.link_ttl_seconds)
        start = now - dt.timedelta(minutes=5)  # clock skew between this host and storage
        signed: dict[str, Any] = {
            "account_name": self.service.account_name or "",
            "container_name": self.container.container_name,
            "blob_name": name,
            "permission": BlobSasPermissions(read=True),
            "start": start,
        }
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:  # Azurite and connection strings: a blob-scoped service SAS
            sas = generate_blob_sas(account_key=account_key, expiry=expiry, **signed)
        else:  # an identity: a user delegation SAS, https only, never outliving its key
            key, key_expiry = await self._user_delegation_key(now)
            sas = generate_blob_sas(user_delegation_key=key, expiry=min(expiry, key_expiry), protocol="https", **signed)
        return f"{self.container.get_blob_client(name).url}?{sas}"

    async def _user_delegation_key(self, now: dt.datetime) -> tuple[UserDelegationKey, dt.datetime]:
        """One delegation key (valid 7 days) shared by all links; renewed while it still covers an hour of links."""
        ttl = dt.timedelta(seconds=self.settings.link_ttl_seconds)
        async with self._delegation_lock:
            if self._delegation_key is None or self._delegation_expiry is None or self._delegation_expiry < now + min(ttl, dt.timedelta(days=7) - dt.timedelta(hours=1)):
                expiry = now + dt.timedelta(days=7) - dt.timedelta(minutes=1)
                async with storage_call("getting a user delegation key"):
                    self._delegation_key = await self.service.get_user_delegation_key(now - dt.timedelta(minutes=5), expiry)
                self._delegation_expiry = expiry
            return self._delegation_key, self._delegation_expiry
