"""HTML out: the templates (Jinja2, autoescaped), the links a page holds, and the headers it is sent with.

Every link and image URL in a page is relative to the app and carries the ``code``
query parameter when the page was asked for with one: in Azure a browser authenticates
with the function key as ``?code=``, and a link without it would answer 401.
The page holds no storage key and no SAS: images load through the stable links
``/images/{name}``, which redirect to a fresh read-only SAS URL.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from shared.gallery.tiles import parse_time

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,  # every value is escaped: a prompt is text, never markup
    # (records are read leniently: a field an older record lacks renders as nothing)
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: dt.datetime | str | None) -> str:
    moment = parse_time(value) if isinstance(value, str) else value
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _clock(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%H:%M UTC") if moment else ""


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


TEMPLATES.filters["when"] = _when
TEMPLATES.filters["clock"] = _clock  # a tile's time: the page already says the day
TEMPLATES.filters["pretty"] = _pretty


@dataclass(frozen=True)
class Links:
    """Builds the page's URLs: relative to the app's root path, with ``code`` carried along."""

    root: str = ""
    code: str | None = None

    def url(self, path: str, **params: Any) -> str:
        """``path`` (quoted) with the non-empty ``params`` and the code."""
        query = {k: str(v) for k, v in params.items() if v not in (None, "")}
        if self.code:
            query["code"] = self.code
        return f"{self.root}{quote(path)}" + (f"?{urlencode(query)}" if query else "")

    def gallery(self, **params: Any) -> str:
        """The index with these filters."""
        return self.url("/gallery", **params)

    def detail(self, prefix: str, item_id: str) -> str:
        """The page of one generation or job."""
        return self.url(f"/gallery/{prefix}/{item_id}")

    def image(self, name: str) -> str:
        """The stable link of an archived image."""
        return self.url(f"/images/{name}")


def origin(url: str) -> str:
    """scheme://host[:port] of a URL (the storage account, for the page's image policy)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render(template: str, context: dict[str, Any], *, storage_origin: str, status_code: int = 200) -> HTMLResponse:
    """The page, with a policy that allows only its own inline style and images from here and from storage."""
    nonce = secrets.token_urlsafe(16)
    body = TEMPLATES.get_template(template).render(**context, nonce=nonce)
    policy = "; ".join(
        [
            "default-src 'none'",
            f"style-src 'nonce-{nonce}'",
            f"img-src 'self' data: {storage_origin}",  # /images/... redirects to storage
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        # The page URL may hold ?code=: never send it to storage (or anywhere) as a Referer.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(body, status_code=status_code, headers=headers)
