"""The images edits endpoint upstream: where an edit goes, and its multipart body streamed from its parts.

The body is sent under the same rules as a generation (:meth:`UpstreamClient.send`: what is
safe to repeat, the 401 refresh, the timeout, the 200 answer decoded as it streams in).
The images are not joined into one buffer: the body is a list of parts (small headers and
the images' own bytes) that each attempt streams again in slices of at most 1 MiB, with its
Content-Length declared.

One image goes as ``image``, several as repeated ``image[]`` (what the openai SDK sends and
Azure takes), the mask as ``mask``. On the v1 and OpenAI paths ``model`` names the
deployment in the form; on the deployment-scoped path the path names it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence

from shared.deadline import Deadline
from shared.models.edits import EditInput, EditRequest
from shared.settings import Settings
from shared.upstream.client import UpstreamClient, UpstreamResult

SLICE_BYTES = 1024 * 1024  # what one write hands the connection


class MultipartBody:
    """A multipart/form-data body of text fields and files, iterable once per attempt without copying the files."""

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, str, str, bytes]]) -> None:
        """``fields``: (name, text); ``files``: (name, filename, content type, bytes), in the order sent."""
        self.boundary = f"edits-{secrets.token_hex(16)}"
        parts: list[bytes] = []
        for name, value in fields:
            parts.append(self._head(name) + b"\r\n" + value.encode() + b"\r\n")
        for name, filename, content_type, data in files:
            parts += [self._head(name, f'; filename="{filename}"') + f"Content-Type: {content_type}\r\n\r\n".encode(), data, b"\r\n"]
        parts.append(f"--{self.boundary}--\r\n".encode())
        self.parts = parts
        self.length = sum(len(part) for part in parts)

    def _head(self, name: str, extra: str = "") -> bytes:
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type with the boundary, and the length (so the body is not sent chunked)."""
        return {"Content-Type": f"multipart/form-data; boundary={self.boundary}", "Content-Length": str(self.length)}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        # An image goes in slices: 40 MB handed to the transport at once stalls the event loop.
        for part in self.parts:
            for start in range(0, len(part), SLICE_BYTES):
                yield part[start : start + SLICE_BYTES]


def edit_url(settings: Settings, deployment: str) -> str:
    """The edits endpoint for the configured path style."""
    paths = {
        "deployment": f"/openai/deployments/{deployment}/images/edits?api-version={settings.api_version}",
        "v1": "/openai/v1/images/edits",
        "openai": "/v1/images/edits",
    }
    return settings.endpoint + paths[settings.api_style]


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def edit_body(settings: Settings, request: EditRequest, images: Sequence[EditInput], mask: EditInput | None) -> MultipartBody:
    """The multipart body of ``request`` with the inputs' bytes (sniffed content types and extensions)."""
    fields = [(name, _text(value)) for name, value in request.upstream_body.items()]
    if settings.api_style != "deployment":
        fields.append(("model", request.deployment))
    image_field = "image" if len(images) == 1 else "image[]"
    files = [(image_field, f"image-{i}.{item.facts.extension}", item.facts.content_type, item.data) for i, item in enumerate(images)]
    if mask is not None:
        files.append(("mask", "mask.png", "image/png", mask.data))
    return MultipartBody(fields, files)


async def edit(
    client: UpstreamClient, request: EditRequest, images: Sequence[EditInput], mask: EditInput | None, *, deadline: Deadline, budget: float
) -> UpstreamResult:
    """Send the edit upstream within ``deadline`` (repeating what is safe to repeat within ``budget`` seconds of waiting); its images."""
    body = edit_body(client.settings, request, images, mask)
    return await client.send(edit_url(client.settings, request.deployment), body, body.headers, request, deadline=deadline, budget=budget)
