"""What the API says about itself: the api-version it accepts and the public URLs it hands out.

Public URLs (``Operation-Location``) start from a configured base, never from the
request: ``IMAGES_PUBLIC_BASE_URL``, else ``https://{WEBSITE_HOSTNAME}`` (both resolved by
:mod:`shared.settings`), else, on a laptop, the address the server itself listens on (the
ASGI scope's ``server``). The ``Host`` header, ``X-Forwarded-Host`` and ``Forwarded`` are
caller input, so a request naming another host never sees it come back.

Every route that takes ``api-version`` checks it with :func:`check_api_version`: the
whole value must match, so a trailing newline or a script tag is refused, and the
refusal echoes it escaped and capped.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from fastapi import Request

from shared.echo import shown
from shared.errors import invalid
from shared.settings import Settings

# ASCII digits ([0-9], not \d, which takes other scripts' digits); fullmatch, so no trailing newline.
API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?")


def check_api_version(value: str | None, *, required: bool = True) -> str | None:
    """``value`` when it is an api-version such as 2025-04-01-preview; 400 naming ``api-version`` otherwise.

    ``required=False`` lets a route take it optionally (absent or empty: None), checked the same way when given.
    """
    if not value:
        if not required:
            return None
        raise invalid("api-version", "The query parameter 'api-version' is required, e.g. ?api-version=2025-04-01-preview.", "missing_required_parameter")
    if not API_VERSION.fullmatch(value):
        raise invalid("api-version", f"api-version must look like 2025-04-01-preview, got {shown(value)}.")
    return value


def public_base_url(request: Request, settings: Settings) -> str:
    """The configured public base, else the server's own address (``""``: none known, URLs stay relative)."""
    if settings.public_base_url:
        return settings.public_base_url
    server = request.scope.get("server")
    if not server or str(server[0]).startswith("/"):  # no address, or a Unix socket: a path, which the caller resolves
        return ""
    host, port = str(server[0]), server[1]
    scheme = "https" if request.scope.get("scheme") == "https" else "http"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    default_port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default_port) else f"{scheme}://{host}:{int(port)}"


def operation_location(request: Request, settings: Settings, job_id: str) -> str:
    """Where the status of job ``job_id`` is polled, with the request's api-version when it is one, else the configured one."""
    given = request.query_params.get("api-version")
    api_version = given if given and API_VERSION.fullmatch(given) else settings.api_version
    path = request.app.url_path_for("operation_status", job_id=job_id)
    return f"{public_base_url(request, settings)}{path}?{urlencode({'api-version': api_version})}"
