"""What the local demo does with an answer's link: read the archived image and its record, save the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from local.stack import Stack


@dataclass(frozen=True)
class Fetched:
    """An archived image as the demo found it."""

    name: str  # the blob name in the images container
    record_name: str
    record: dict[str, Any]
    data: bytes
    saved: Path


def fetch_archived(stack: Stack, link: str, out_dir: Path, suffix: str = "") -> Fetched:
    """Download the image behind ``link`` (a SAS URL), read its record through the stable route, save it as ``<id><suffix>.<ext>``."""
    image = httpx.get(link, timeout=60)
    image.raise_for_status()
    name = httpx.URL(link).path.split(f"/{stack.settings.images_container}/", 1)[1]  # /<account>/<container>/<name>
    record_name = name.rsplit("/", 1)[0] + "/record.json"
    record = httpx.get(f"{stack.url}/images/{record_name}", headers=stack.headers(), follow_redirects=True, timeout=60).json()
    out_dir.mkdir(parents=True, exist_ok=True)
    extension = "png" if image.headers.get("content-type") == "image/png" else "jpg"
    saved = out_dir / f"{record['id']}{suffix}.{extension}"
    saved.write_bytes(image.content)
    return Fetched(name, record_name, record, image.content, saved)
