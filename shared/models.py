"""Model families, their rules, request parsing and translation.

Every parameter is checked here before anything goes upstream. A seed-style
(DALL-E 3) request to a gpt-image deployment is translated, not refused, and
what was translated or dropped is recorded in ``ImageRequest.translations``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DALL_E_3 = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_1_MINI = "gpt-image-1-mini"
GPT_IMAGE_1_5 = "gpt-image-1.5"
GPT_IMAGE_2 = "gpt-image-2"
FAMILIES = frozenset({DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5, GPT_IMAGE_2})


def family_for_name(name: str) -> str | None:
    """The family a deployment named like one runs ("gpt-image-1-mini" -> itself), else None."""
    lowered = name.strip().lower()
    return lowered if lowered in FAMILIES else None


@dataclass(frozen=True)
class ImageRequest:
    """A checked request: what the caller asked, what goes upstream, what they get back."""

    deployment: str
    family: str
    asked: dict[str, Any]  # the caller's body as parsed (after checks), for the record
    upstream_body: dict[str, Any]  # exactly what is sent upstream (no "model": the client adds it for v1/openai)
    response_format: Literal["url", "b64_json"]  # what this service returns to the caller
    n: int
    output_format: Literal["png", "jpeg"]
    translations: list[str] = field(default_factory=list)  # e.g. "quality: hd -> high", "style: dropped"

    @property
    def content_type(self) -> str:
        return "image/png" if self.output_format == "png" else "image/jpeg"

    @property
    def extension(self) -> str:
        return "png" if self.output_format == "png" else "jpg"
