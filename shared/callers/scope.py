"""Names a caller cannot compute for anyone else: keyed with a secret only the app holds.

An ``Idempotency-Key`` names a job, and an uploaded image names its stored input. Hashed
without a secret (``sha256(deployment, principal, key)``, ``sha256(bytes)``) anyone could
compute another caller's job id from a guessable key (``order-4711``), or ask whether anyone
stored an image by its hash. Here both are an HMAC-SHA256 under the app's secret, over the
caller's :attr:`~shared.callers.Caller.id` and what names the thing:

    job id      idem-{hmac(secret, "job", caller, deployment, key)[:40]}
    input name  inputs/{hmac(secret, "input", caller, sha256(bytes))}.{ext}

so the same key from another caller is another job, and the same image from another caller
another blob: nothing answers a question about someone else's content.

**Where the secret lives.** 32 random bytes the app makes itself on its first start and keeps in
the blob ``image-generation/scope-key`` of the ``azure-webjobs-secrets`` container, beside the
Functions host's own keys: the app's identity may write there (the templates grant it), callers
hold no role on it, the retention rule does not reach it, and every instance reads the same one.
The first instance to start creates it (If-None-Match: *); a race is lost to the one that wrote
first, whose secret every instance then reads. Nothing rotates it: a new secret would give every
Idempotency-Key a new job id, so a retried submission after a rotation would be a new job (and
billed again). Do not delete the blob.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from shared.callers.identity import Caller
from shared.errors import ServiceError, storage_call

SECRET_CONTAINER = "azure-webjobs-secrets"  # noqa: S105  # a container name, not a password
SECRET_BLOB = "image-generation/scope-key"  # noqa: S105  # a blob name, not a password
_KEY_BYTES = 32


def keyed(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 of ``parts`` (newline-joined; none may hold a newline) under ``key``, hex."""
    if any("\n" in part for part in parts):
        raise ValueError("a keyed part holds a newline")
    return hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def job_id_for(key: bytes, caller: Caller, deployment: str, idempotency_key: str) -> str:
    """The job an ``Idempotency-Key`` names: one per caller, deployment and key."""
    return f"idem-{keyed(key, 'job', caller.id, deployment, idempotency_key)[:40]}"


def input_name_for(key: bytes, caller: Caller, sha256_hex: str, extension: str) -> str:
    """Where a caller's uploaded image is stored: one blob per caller and content."""
    return f"inputs/{keyed(key, 'input', caller.id, sha256_hex)}.{extension}"


class ScopeKey:
    """The app's secret (read or made once per instance), and the names keyed with it."""

    def __init__(self, blobs: BlobServiceClient) -> None:
        self._blob = blobs.get_blob_client(SECRET_CONTAINER, SECRET_BLOB)
        self._container = blobs.get_container_client(SECRET_CONTAINER)
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def key(self) -> bytes:
        """The secret: from memory, else read from storage, else made and stored (the first writer wins)."""
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    async with storage_call("reading the app's secret"):
                        self._key = await self._read() or await self._create()
        return self._key

    async def job_id(self, caller: Caller, deployment: str, idempotency_key: str) -> str:
        return job_id_for(await self.key(), caller, deployment, idempotency_key)

    async def _read(self) -> bytes | None:
        try:
            download = await self._blob.download_blob()
            text = await download.readall()
        except ResourceNotFoundError:
            return None
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != _KEY_BYTES:
            # Never replaced: a new secret would give every Idempotency-Key a new job.
            raise ServiceError(500, "ConfigurationError", f"The app's secret ({SECRET_CONTAINER}/{SECRET_BLOB}) is not 32 bytes of base64.")
        return key

    async def _create(self) -> bytes:
        try:
            await self._container.create_container()
        except ResourceExistsError:
            pass
        try:
            await self._blob.upload_blob(base64.b64encode(secrets.token_bytes(_KEY_BYTES)), overwrite=False)
        except (ResourceExistsError, ResourceModifiedError):
            pass  # another instance wrote first (409, or 412 when racing it): its secret is the one
        found = await self._read()
        if found is None:
            raise ServiceError(503, "StorageUnavailable", "The app's secret vanished while it was made.", transient=True)
        return found
