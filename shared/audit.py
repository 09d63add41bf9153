"""What the archive keeps so a generation can be audited: who asked, what upstream said, what came back.

- **Caller**: who asked, as the platform vouches for it (shared/callers: the key holder, the
  Entra identity App Service authentication validated, or the queue), never a name the client
  chose. The request's own ``user`` field stays what it is, a parameter (``parameters.asked``).
- **Upstream**: endpoint, path style, api-version (deployment-scoped path only) and
  upstream's request id (``apim-request-id``, else ``x-request-id``), which Azure support asks for.
- **Images**: the real format and dimensions, read from each image's header (PNG IHDR,
  JPEG SOF, WebP VP8/VP8L/VP8X) rather than taken from the request, since ``size: auto``
  and translated sizes leave the request silent or wrong about them.
- **Failures**: a call that reached upstream and failed (a filtered prompt or image, a
  refusal, a timeout that may be billed) leaves ``{prefix}/{id}/failed-{UTC time}.json``
  beside where its images would have been, naming the side filtered and the categories.
  Its name is never ``record.json``: for a job that name means "finished" (shared/jobs).
- **Retention**: when the templates' lifecycle rule deletes the record (``IMAGES_RETENTION_DAYS``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from azure.storage.blob import ContentSettings

from shared.archive import OWNER_METADATA, Archive
from shared.callers import Caller
from shared.errors import ServiceError, storage_call
from shared.models import ImageRequest
from shared.models.edits import edit_record_fields
from shared.models.image_bytes import ImageFacts, sniff
from shared.settings import Settings

log = logging.getLogger(__name__)

# Failures raised before anything was sent: no connection, no credential.
NOT_SENT_CODES = frozenset({"UpstreamUnavailable", "CredentialUnavailable", "ConfigurationError"})
_JSON = ContentSettings(content_type="application/json")


def upstream_record(settings: Settings, request_id: str | None, attempts: int | None = None) -> dict[str, Any]:
    """The record's ``upstream``: where the call went and upstream's id for it."""
    record: dict[str, Any] = {
        "endpoint": settings.endpoint,
        "api_style": settings.api_style,
        "api_version": settings.api_version if settings.api_style == "deployment" else None,
        "request_id": request_id,
    }
    if attempts is not None:
        record["attempts"] = attempts
    return record


def retention_record(settings: Settings, now: dt.datetime) -> dict[str, Any] | None:
    """``{"days", "delete_after"}`` when the lifecycle rule deletes archived blobs; None when they are kept."""
    days = settings.retention_days
    if not days:
        return None
    return {"days": days, "delete_after": (now + dt.timedelta(days=days)).date().isoformat()}


# --- image headers -----------------------------------------------------------------------------


def image_facts(data: bytes) -> ImageFacts | None:
    """Format and dimensions from the image's own header (shared/models/image_bytes.py), or None for bytes it does not know."""
    return sniff(data)


# --- failures ----------------------------------------------------------------------------------


def reached_upstream(error: ServiceError) -> bool:
    """True when the failed call was sent (and may be billed): everything but a refused connection or a missing credential."""
    return error.code not in NOT_SENT_CODES


def failure_name(base: str, now: dt.datetime) -> str:
    """``{base}/failed-20261125T101112345678Z.json``: one per failed call, in the order they happened."""
    return f"{base}/failed-{now.astimezone(dt.UTC):%Y%m%dT%H%M%S%fZ}.json"


def failure_record(
    generation_id: str,
    kind: str,
    request: ImageRequest,
    error: ServiceError,
    *,
    settings: Settings,
    caller: Caller,
    now: dt.datetime,
) -> dict[str, Any]:
    """The record of a call that reached upstream and failed: the request, the caller, upstream's answer."""
    body = error.body()["error"]
    record: dict[str, Any] = {
        "id": generation_id,
        "kind": kind,
        "outcome": "filtered" if error.code == "contentFilter" else "failed",
        "created": now.isoformat(),
        "deployment": request.deployment,
        "model": request.family,
        "prompt": request.asked.get("prompt"),
        "parameters": {"asked": request.asked, "sent": request.upstream_body},
        "translations": request.translations,
        "caller": caller.record(),
        "upstream": upstream_record(settings, error.upstream_request_id) | {"status": error.status},
        "error": body,
        "retention": retention_record(settings, now),
        **edit_record_fields(request),  # an edit's failure names its inputs, as its record would
    }
    if "filtered" in body:
        record["filtered"] = body["filtered"]
        record["categories"] = body.get("categories", [])
    return record


async def write_failure(archive: Archive, base: str, record: dict[str, Any], now: dt.datetime) -> str | None:
    """Write a failure record (its caller's id in its metadata, as every archived blob has); its name,
    or None when storage refused it (logged, never raised over upstream's error)."""
    name = failure_name(base, now)
    try:
        async with storage_call("writing a failure record"):
            await archive.container.upload_blob(
                name, json.dumps(record, ensure_ascii=False, indent=2).encode(), overwrite=False, content_settings=_JSON,
                metadata={OWNER_METADATA: record["caller"]["id"]},
            )  # fmt: skip
    except ServiceError as exc:
        log.warning("could not write the failure record %s: %s", name, exc.message)
        return None
    return name
