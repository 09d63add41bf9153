"""The edit routes' request bodies in OpenAPI, built from the family rows' edit rules.

The fields an edit shares with generations take their schema from the generation schema
(itself built from the rules), so the two cannot drift apart; the edit-only fields are
described from ``Family.edits``.
"""

from __future__ import annotations

from typing import Any, Literal

from shared.api.schema import generation_openapi, generation_schema
from shared.models.families import TABLE

_EDITING = {row.name: row.edits for row in TABLE if row.edits is not None}
_MAX_IMAGES = max(rules.max_images for rules in _EDITING.values())
_BINARY = {"type": "string", "format": "binary"}


def _edit_only() -> dict[str, Any]:
    fidelities = sorted({f for rules in _EDITING.values() for f in rules.input_fidelities})
    takers = ", ".join(sorted(name for name, rules in _EDITING.items() if rules.input_fidelities))
    return {
        "input_fidelity": {"type": "string", "enum": fidelities, "description": f"Only for {takers}."},
    }


def _fields() -> dict[str, Any]:
    """Every non-file field of an edit: the shared ones as generations describe them, then the edit-only ones."""
    fields = set().union(*(rules.fields for rules in _EDITING.values())) - {"image", "mask"}
    shared = generation_schema()["properties"]
    return {name: prop for name, prop in shared.items() if name in fields} | _edit_only()


def edit_bodies() -> dict[str, Any]:
    """``requestBody.content``: multipart/form-data with files, or application/json with archived names."""
    families = ", ".join(sorted(_EDITING))
    formats = "PNG or JPEG (WEBP too when upstream is OpenAI's API), judged by the bytes"
    multipart = {
        "image": {**_BINARY, "description": f"The image to edit: {formats}."},
        "image[]": {"type": "array", "items": _BINARY, "maxItems": _MAX_IMAGES, "description": f"Up to {_MAX_IMAGES} images, instead of image."},
        "mask": {**_BINARY, "description": "A PNG with an alpha channel, the size of the first image; alpha 0 marks where to edit."},
    }
    named = {
        "image": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": _MAX_IMAGES}],
            "description": "Archived names of your own: an input as an earlier edit named it (inputs/<64 hex>.png|jpg|webp), or an archived image such as 2026-11-25/<id>/0.png.",
        },
        "mask": {"type": "string", "description": "The archived name of a PNG with an alpha channel, the size of the first image."},
    }
    fields = _fields()
    note = f"Families that edit: {families}."
    return {
        "multipart/form-data": {"schema": {"type": "object", "required": ["prompt"], "properties": multipart | fields, "description": note}},
        "application/json": {"schema": {"type": "object", "required": ["prompt", "image"], "properties": named | fields, "description": note}},
    }


def edit_openapi(api_version: Literal["required", "none"], *, prefer: bool) -> dict[str, Any]:
    """``openapi_extra`` of an edit route: the two request bodies, and the parameters the generation routes
    declare (``api-version`` on the deployment paths, ``Idempotency-Key``, ``Prefer`` where the route reads it)."""
    return {**generation_openapi(api_version, prefer=prefer), "requestBody": {"required": True, "content": edit_bodies()}}
