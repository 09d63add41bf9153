"""What the API says about itself: the api-version it accepts and the public URLs it hands out.

Public URLs (``Operation-Location``) start from a configured base, never from the
request: ``IMAGES_PUBLIC_BASE_URL``, else ``https://{WEBSITE_HOSTNAME}`` (both resolved by
:mod:`shared.settings`), else, on a laptop, the address the server itself listens on (the
ASGI scope's ``server``). The ``Host`` header, ``X-Forwarded-Host`` and ``Forwarded`` are
caller input, so a request naming another host never sees it come back.

Every route that takes ``api-version`` checks it with :func:`check_api_version`: it must be
one of :data:`KNOWN_API_VERSIONS`, the Azure OpenAI inference versions whose images API this
service speaks; anything else (a trailing newline, a script tag, ``2023-01-01``,
``2099-01-01-preview``) is a 400 that lists them, echoing what was sent escaped and capped.
The caller's api-version is never sent upstream: the deployment-scoped path upstream takes
``AZURE_OPENAI_API_VERSION`` (shared/upstream), whatever version the caller spoke.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request

from shared.echo import shown
from shared.errors import invalid
from shared.settings import Settings

# The data-plane inference versions of Azure OpenAI with the images API as this service serves it (DALL-E 3's
# contract, from 2023-12-01-preview; gpt-image from 2025-04-01-preview, the last dated version before the v1 API,
# which takes none): Learn's "Azure OpenAI API version lifecycle" and the inference specs in azure-rest-api-specs.
KNOWN_API_VERSIONS: tuple[str, ...] = (
    "2024-02-01", "2024-06-01", "2024-10-21",
    "2023-12-01-preview", "2024-02-15-preview", "2024-03-01-preview", "2024-04-01-preview", "2024-05-01-preview",
    "2024-07-01-preview", "2024-08-01-preview", "2024-09-01-preview", "2024-10-01-preview", "2024-12-01-preview",
    "2025-01-01-preview", "2025-02-01-preview", "2025-03-01-preview", "2025-04-01-preview",
)  # fmt: skip


def check_api_version(value: str | None, *, required: bool = True) -> str | None:
    """``value`` when it is one of :data:`KNOWN_API_VERSIONS`; 400 naming ``api-version`` and listing them otherwise.

    ``required=False`` lets a route take it optionally (absent or empty: None), checked the same way when given.
    """
    if not value:
        if not required:
            return None
        raise invalid("api-version", "The query parameter 'api-version' is required, e.g. ?api-version=2025-04-01-preview.", "missing_required_parameter")
    if value not in KNOWN_API_VERSIONS:
        raise invalid("api-version", f"api-version {shown(value)} is not one this service knows; it takes {', '.join(KNOWN_API_VERSIONS)}.")
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
    api_version = given if given in KNOWN_API_VERSIONS else settings.api_version
    path = request.app.url_path_for("operation_status", job_id=job_id)
    return f"{public_base_url(request, settings)}{path}?{urlencode({'api-version': api_version})}"
