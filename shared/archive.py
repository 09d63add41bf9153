"""Blob Storage: every image and a JSON record beside it, and links to them.

Layout in the images container (private)::

    {prefix}/{id}/{index}.{png|jpg}   the image bytes, content type set, sha256 in metadata
    {prefix}/{id}/record.json         written last: a record never points at a missing image

Names come from ids, never from the prompt. Links are read-only SAS URLs: a user
delegation SAS when the app authenticates with an identity, a blob-scoped
service SAS signed with the account key on Azurite (connection strings).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, ContentSettings, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from shared.errors import ServiceError
from shared.settings import Settings

log = logging.getLogger(__name__)

RECORD_NAME = "record.json"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_BLOB_PATH = re.compile(r"^(?:[A-Za-z0-9_-]{1,64}/){1,3}(?:\d{1,2}\.(?:png|jpg|webp)|record\.json)$")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def is_safe_id(value: str) -> bool:
    """Ids that may become part of a blob name: letters, digits, - and _, at most 64."""
    return bool(_SAFE_ID.match(value))


def is_archive_path(name: str) -> bool:
    """True for names this archive writes (guards the stable link route against arbitrary reads)."""
    return bool(_BLOB_PATH.match(name)) and ".." not in name


@dataclass(frozen=True)
class ArchivedImage:
    """One image as stored."""

    name: str
    size: int
    sha256: str
    content_type: str


def _image_metadata(generation_id: str, index: int, count: int, digest: str, record: dict[str, Any], detail: dict[str, Any]) -> dict[str, str]:
    """Blob metadata (ASCII, < 8 KiB in all): enough to rebuild the record if it was never written."""
    meta = {"generation": generation_id, "index": str(index), "count": str(count), "sha256": digest}
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
    try:
        await container.create_container()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise storage_error(exc, f"creating the {what} container") from None
        log.info("no permission to create the %s container; assuming infrastructure made it", what)
    except AzureError as exc:
        raise storage_error(exc, f"creating the {what} container") from None


def storage_error(exc: Exception, action: str) -> ServiceError:
    """A storage failure as the service reports it (no URLs with signatures, no keys)."""
    return ServiceError(
        503, "StorageUnavailable", f"Blob Storage failed while {action}: {type(exc).__name__}", transient=True
    )


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

    def _base(self, prefix: str, generation_id: str) -> str:
        return f"{prefix}/{generation_id}" if prefix else generation_id

    async def store(
        self,
        prefix: str,
        generation_id: str,
        images: list[tuple[bytes, str]],
        record: dict[str, Any],
    ) -> tuple[list[ArchivedImage], dict[str, Any]]:
        """Upload each (bytes, content_type), then the record with their names, sizes and hashes.

        Each image carries in its metadata what is needed to rebuild the record
        (``recover``), so a crash between the images and the record never forces
        a second generation. On a storage failure the images uploaded so far are
        removed (best effort) and no record is written: no record ever points at
        a missing image. Returns the images and the record as written.
        """
        await self.ensure_container()
        base = self._base(prefix, generation_id)
        archived: list[ArchivedImage] = []
        details = record.get("images") or [{}] * len(images)
        try:
            for index, (data, content_type) in enumerate(images):
                name = f"{base}/{index}.{_EXTENSIONS.get(content_type, 'bin')}"
                digest = hashlib.sha256(data).hexdigest()
                await self.container.upload_blob(
                    name,
                    data,
                    overwrite=True,
                    content_settings=ContentSettings(content_type=content_type, cache_control="private, max-age=31536000, immutable"),
                    metadata=_image_metadata(generation_id, index, len(images), digest, record, details[index] if index < len(details) else {}),
                )
                archived.append(ArchivedImage(name, len(data), digest, content_type))
            full_record = await self.write_record(prefix, generation_id, record, archived)
        except AzureError as exc:
            await self._remove([a.name for a in archived])
            raise storage_error(exc, "archiving the image") from None
        return archived, full_record

    async def write_record(self, prefix: str, generation_id: str, record: dict[str, Any], archived: list[ArchivedImage]) -> dict[str, Any]:
        """Write the record naming each archived image (the last write of a generation)."""
        details = record.get("images") or []
        full_record = dict(record)
        full_record["images"] = [
            {**(details[i] if i < len(details) else {}), "name": a.name, "bytes": a.size, "sha256": a.sha256, "content_type": a.content_type}
            for i, a in enumerate(archived)
        ]
        await self.container.upload_blob(
            f"{self._base(prefix, generation_id)}/{RECORD_NAME}",
            json.dumps(full_record, ensure_ascii=False, indent=2).encode(),
            overwrite=True,
            content_settings=ContentSettings(content_type="application/json"),
        )
        return full_record

    async def recover(self, prefix: str, generation_id: str) -> tuple[list[ArchivedImage], list[dict[str, Any]]] | None:
        """Images of a generation whose record was never written: all of them, with their metadata, or None."""
        found: dict[int, tuple[ArchivedImage, dict[str, Any]]] = {}
        expected = None
        try:
            async for blob in self.container.list_blobs(name_starts_with=f"{self._base(prefix, generation_id)}/", include=["metadata"]):
                meta = blob.metadata or {}
                if "index" not in meta or "count" not in meta:
                    continue
                expected = int(meta["count"])
                content_type = blob.content_settings.content_type or "application/octet-stream"
                found[int(meta["index"])] = (ArchivedImage(blob.name, int(blob.size), meta.get("sha256", ""), content_type), _read_metadata(meta))
        except ResourceNotFoundError:
            return None  # not even the container yet
        except AzureError as exc:
            raise storage_error(exc, "looking for archived images") from None
        if expected is None or sorted(found) != list(range(expected)):
            return None
        return [found[i][0] for i in range(expected)], [found[i][1] for i in range(expected)]

    async def _remove(self, names: list[str]) -> None:
        for name in names:
            try:
                await self.container.delete_blob(name)
            except AzureError:
                log.warning("could not remove %s after a failed archive", name)

    async def read_record(self, prefix: str, generation_id: str) -> dict[str, Any] | None:
        """The record of a generation, or None if it was never completed."""
        base = self._base(prefix, generation_id)
        try:
            stream = await self.container.download_blob(f"{base}/{RECORD_NAME}")
            record: dict[str, Any] = json.loads(await stream.readall())
            return record
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, "reading a record") from None

    async def exists(self, name: str) -> bool:
        try:
            await self.container.get_blob_client(name).get_blob_properties()
            return True
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise storage_error(exc, "looking up an image") from None

    async def link(self, name: str) -> str:
        """A read-only SAS URL for one blob, valid for the configured lifetime."""
        now = dt.datetime.now(dt.UTC)
        expiry = now + dt.timedelta(seconds=self.settings.link_ttl_seconds)
        start = now - dt.timedelta(minutes=5)  # clock skew between this host and storage
        account = self.service.account_name
        credential = self.service.credential
        account_key = getattr(credential, "account_key", None)
        if account_key:
            sas = generate_blob_sas(
                account_name=account or "",
                container_name=self.container.container_name,
                blob_name=name,
                account_key=account_key,
                permission=BlobSasPermissions(read=True),
                expiry=expiry,
                start=start,
            )
        else:
            key, key_expiry = await self._user_delegation_key(now)
            sas = generate_blob_sas(
                account_name=account or "",
                container_name=self.container.container_name,
                blob_name=name,
                user_delegation_key=key,
                permission=BlobSasPermissions(read=True),
                expiry=min(expiry, key_expiry),
                start=start,
                protocol="https",
            )
        return f"{self.container.get_blob_client(name).url}?{sas}"

    async def _user_delegation_key(self, now: dt.datetime) -> tuple[UserDelegationKey, dt.datetime]:
        """One delegation key (valid 7 days) shared by all links; renewed while it still covers an hour of links."""
        ttl = dt.timedelta(seconds=self.settings.link_ttl_seconds)
        async with self._delegation_lock:
            if self._delegation_key is None or self._delegation_expiry is None or self._delegation_expiry < now + min(ttl, dt.timedelta(days=7) - dt.timedelta(hours=1)):
                expiry = now + dt.timedelta(days=7) - dt.timedelta(minutes=1)
                try:
                    self._delegation_key = await self.service.get_user_delegation_key(now - dt.timedelta(minutes=5), expiry)
                except AzureError as exc:
                    raise storage_error(exc, "getting a user delegation key") from None
                self._delegation_expiry = expiry
            return self._delegation_key, self._delegation_expiry
