"""Image URLs in an upstream answer: which are fetched, and how.

An image URL comes from the answer, so it is an address someone else chose. It is fetched only
when it leads where the images API keeps images: outside local mode over https, to the
configured upstream's own host and port or to Azure Blob Storage (``*.blob.core.windows.net``);
in local mode (``IMAGES_ALLOW_HTTP_UPSTREAM``) only to the configured upstream's host and port.
No credentials in the URL, no redirects at all: a redirect could lead anywhere the first
address was not allowed to. The body is read streaming, up to the image size cap.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

import httpx

from shared.settings import Settings
from shared.streams import read_capped
from shared.upstream.errors import NOT_REPEATED, upstream_error

AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _port(parts: SplitResult) -> int | None:
    return parts.port or _DEFAULT_PORTS.get(parts.scheme)


def url_refusal(url: str, settings: Settings) -> str | None:
    """Why :mod:`this module's <shared.upstream.fetch>` rules do not fetch ``url``, or None when they do."""
    try:
        parts, endpoint = urlsplit(url), urlsplit(settings.endpoint)
        port, endpoint_port = _port(parts), _port(endpoint)
    except ValueError:  # a port that is not a number
        return "that is malformed"
    local = settings.allow_http_upstream  # local mode: the simulator, and nothing else on this machine
    if parts.scheme != "https" and not (local and parts.scheme == "http"):
        return "that is not https"
    if parts.username is not None or parts.password is not None or not parts.hostname:
        return "with credentials in it, or no host"
    same_upstream = parts.hostname == endpoint.hostname and port == endpoint_port
    blob = not local and parts.hostname.endswith(AZURE_BLOB_SUFFIX) and port == 443
    if not (same_upstream or blob):
        return "on another host or port than the model service" + ("" if local else " or Azure Blob Storage")
    return None


async def fetch_image(http: httpx.AsyncClient, url: str, settings: Settings) -> bytes:
    """The image at ``url``, once, unless :func:`url_refusal` objects; a final 502 otherwise (the answer it came in is billed)."""
    refusal = url_refusal(url, settings)
    if refusal is not None:
        raise upstream_error(f"The model service returned an image URL {refusal}; not fetched. {NOT_REPEATED}")
    try:
        async with http.stream("GET", url, follow_redirects=False, timeout=httpx.Timeout(60.0, connect=10.0)) as response:
            if response.is_redirect:
                raise upstream_error(f"The image URL redirected to another address; not followed. {NOT_REPEATED}")
            if response.status_code != 200:
                raise upstream_error(f"Downloading the generated image failed ({response.status_code}). {NOT_REPEATED}")
            return await _read_capped(response, settings.max_image_bytes)
    except httpx.HTTPError as exc:
        raise upstream_error(f"Downloading the generated image failed ({type(exc).__name__}). {NOT_REPEATED}") from None


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    too_large = upstream_error(f"The generated image is larger than {limit} bytes. {NOT_REPEATED}")
    return await read_capped(response.aiter_bytes(), response.headers.get("content-length"), limit, too_large)
