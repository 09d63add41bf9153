"""The names the app keys with its secret (shared/callers/scope.py), computed the way the app does for tests.

The secret lives in the Azurite every test shares; whichever comes first (a test here, or an app)
makes it, exactly as two app instances would, so the names below are the ones the app gives.
"""

from __future__ import annotations

import base64
import hashlib

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from local.azurite import Azurite
from shared.callers import Caller, key_caller
from shared.callers.scope import SECRET_BLOB, SECRET_CONTAINER, input_name_for, job_id_for


def scope_key(azurite: Azurite) -> bytes:
    """The app's secret in this Azurite, made now if no app made it yet."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    blob = service.get_blob_client(SECRET_CONTAINER, SECRET_BLOB)
    try:
        return base64.b64decode(blob.download_blob().readall())
    except ResourceNotFoundError:
        pass
    try:
        service.create_container(SECRET_CONTAINER)
    except ResourceExistsError:
        pass
    try:
        blob.upload_blob(base64.b64encode(hashlib.sha256(b"tests").digest()), overwrite=False)
    except (ResourceExistsError, ResourceModifiedError):
        pass
    return base64.b64decode(blob.download_blob().readall())


def input_name(azurite: Azurite, data: bytes, extension: str = "png", caller: Caller | None = None) -> str:
    """Where the app stores ``caller``'s upload ``data`` (the key holder's by default)."""
    return input_name_for(scope_key(azurite), caller or key_caller(), hashlib.sha256(data).hexdigest(), extension)


def job_id(azurite: Azurite, deployment: str, idempotency_key: str, caller: Caller | None = None) -> str:
    """The job an Idempotency-Key names for ``caller`` (the key holder by default)."""
    return job_id_for(scope_key(azurite), caller or key_caller(), deployment, idempotency_key)
