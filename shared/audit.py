"""What the archive keeps so a generation can be audited: who asked, what upstream said, what came back.

- **Caller**: the App Service authentication headers (``X-MS-CLIENT-PRINCIPAL-NAME``,
  ``-ID``, ``-IDP``), which the platform sets, after stripping any a client sent, when App
  Service authentication is on; and the request's own ``user`` field.
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
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import ContentSettings

from shared.archive import Archive
from shared.errors import ServiceError, storage_call
from shared.models import ImageRequest
from shared.settings import Settings

log = logging.getLogger(__name__)

# App Service authentication sets these on every authenticated request (and removes any a client sent).
PRINCIPAL_HEADERS = {
    "name": "x-ms-client-principal-name",
    "id": "x-ms-client-principal-id",
    "idp": "x-ms-client-principal-idp",
}
_MAX_HEADER_CHARS = 256
# Failures raised before anything was sent: no connection, no credential.
NOT_SENT_CODES = frozenset({"UpstreamUnavailable", "CredentialUnavailable", "ConfigurationError"})
_JSON = ContentSettings(content_type="application/json")


def caller_identity(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller as the platform names it: {"name", "id", "idp"}, each only when its header is there."""
    found = {}
    for key, header in PRINCIPAL_HEADERS.items():
        value = headers.get(header, "").strip()
        if value:
            found[key] = value[:_MAX_HEADER_CHARS]
    return found


def caller_record(identity: Mapping[str, str] | None, request: ImageRequest) -> dict[str, Any]:
    """The record's ``caller``: the platform's identity (when there is one) and the request's ``user``."""
    caller: dict[str, Any] = dict(identity or {})
    user = request.asked.get("user")
    if isinstance(user, str):
        caller["user"] = user
    return caller


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


@dataclass(frozen=True)
class ImageFacts:
    """What an image's own header says about it."""

    format: str  # "png", "jpeg", "webp"
    width: int
    height: int

    def as_record(self) -> dict[str, Any]:
        """The facts as the record holds them, beside the image's name and hash."""
        return {"format": self.format, "width": self.width, "height": self.height}


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field


def image_facts(data: bytes) -> ImageFacts | None:
    """Format and dimensions from the image's header, or None for bytes this reader does not know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return ImageFacts("png", width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_facts(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_facts(data)
    return None


def _jpeg_facts(data: bytes) -> ImageFacts | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE_MARKERS:
            i += 2
            continue
        if marker in _SOF_MARKERS:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageFacts("jpeg", width, height)
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + length
    return None


def _webp_facts(data: bytes) -> ImageFacts | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return ImageFacts("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        b0, b1, b2, b3 = data[21:25]
        return ImageFacts("webp", 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6)))
    if chunk == b"VP8X" and len(data) >= 30:
        return ImageFacts("webp", 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little"))
    return None


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
    caller: Mapping[str, str] | None,
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
        "caller": caller_record(caller, request),
        "upstream": upstream_record(settings, error.upstream_request_id) | {"status": error.status},
        "error": body,
        "retention": retention_record(settings, now),
    }
    if "filtered" in body:
        record["filtered"] = body["filtered"]
        record["categories"] = body.get("categories", [])
    return record


async def write_failure(archive: Archive, base: str, record: dict[str, Any], now: dt.datetime) -> str | None:
    """Write a failure record; its name, or None when storage refused it (logged, never raised over upstream's error)."""
    name = failure_name(base, now)
    try:
        async with storage_call("writing a failure record"):
            await archive.container.upload_blob(
                name, json.dumps(record, ensure_ascii=False, indent=2).encode(), overwrite=False, content_settings=_JSON
            )
    except ServiceError as exc:
        log.warning("could not write the failure record %s: %s", name, exc.message)
        return None
    return name
