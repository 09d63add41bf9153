"""The generation request's schema in OpenAPI, built from the model rules (shared/models.py).

Bounds and choices are read from the rules parse_request enforces, never restated here, so
the published schema cannot drift from the checks (tests/test_api.py holds one to the other).
The schema is the union over families; each property says which families differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shared import models

# models.py keeps these rule tables private; they are read here so the schema has no copy of them.
from shared.models import (
    _BACKGROUNDS,
    _DALL_E_3_QUALITIES,
    _GPT_IMAGE_QUALITIES,
    _MAX_N,
    _MODERATIONS,
    _OUTPUT_FORMATS,
    _RESPONSE_FORMATS,
    _SEED_QUALITY_TRANSLATIONS,
    _SEED_SIZE_TRANSLATIONS,
    _STYLES,
)

# parse_request checks output_compression against 0..100 written inline (no named constant yet).
OUTPUT_COMPRESSION_RANGE = (0, 100)


def _families(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _only_for(field: str) -> str:
    """The sentence naming the families that take ``field``, or "" when every family does."""
    takers = [family for family, allowed in models.FIELDS_BY_FAMILY.items() if field in allowed]
    return "" if len(takers) == len(models.FIELDS_BY_FAMILY) else f" Only for {_families(takers)}."


def _choice(field: str, values: Iterable[str], description: str = "") -> dict[str, Any]:
    return {"type": "string", "enum": list(dict.fromkeys(values)), "description": (description + _only_for(field)).strip()}


def _prompt() -> dict[str, Any]:
    by_limit: dict[int, list[str]] = {}
    for family, limit in models.PROMPT_LIMITS.items():
        by_limit.setdefault(limit, []).append(family)
    limits = "; ".join(f"{_families(names)}: 1-{limit}" for limit, names in sorted(by_limit.items()))
    return {"type": "string", "minLength": 1, "maxLength": max(models.PROMPT_LIMITS.values()), "description": f"Characters: {limits}."}


def _size() -> dict[str, Any]:
    fixed = _families(models.GPT_IMAGE_FAMILIES - {models.GPT_IMAGE_2})
    seed = ", ".join(f"{a} -> {b}" for a, b in _SEED_SIZE_TRANSLATIONS.items())
    gpt_image_2 = (
        f"auto, or WIDTHxHEIGHT with edges multiples of {models.GPT_IMAGE_2_EDGE_MULTIPLE}, long edge under "
        f"{models.GPT_IMAGE_2_MAX_EDGE_EXCLUSIVE}, at most {models.GPT_IMAGE_2_MAX_RATIO}:1, "
        f"{models.GPT_IMAGE_2_MIN_PIXELS:,}-{models.GPT_IMAGE_2_MAX_PIXELS:,} pixels"
    )
    return {
        "type": "string",
        "examples": list(dict.fromkeys([*models.DALL_E_3_SIZES, *models.GPT_IMAGE_1_SIZES])),
        "description": (
            f"{models.DALL_E_3}: {', '.join(models.DALL_E_3_SIZES)}. {fixed}: {', '.join(models.GPT_IMAGE_1_SIZES)} "
            f"(seed sizes translated: {seed}). {models.GPT_IMAGE_2}: {gpt_image_2}."
        ),
    }


def _n() -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": _MAX_N, "description": f"{models.DALL_E_3}: 1 only."}


def _quality() -> dict[str, Any]:
    seed = ", ".join(f"{a} -> {b}" for a, b in _SEED_QUALITY_TRANSLATIONS.items())
    return _choice(
        "quality",
        [*_DALL_E_3_QUALITIES, *_GPT_IMAGE_QUALITIES],
        f"{models.DALL_E_3}: {', '.join(_DALL_E_3_QUALITIES)}. gpt-image: {', '.join(_GPT_IMAGE_QUALITIES)} (seed values translated: {seed}).",
    )


def _output_compression() -> dict[str, Any]:
    low, high = OUTPUT_COMPRESSION_RANGE
    return {"type": "integer", "minimum": low, "maximum": high, "description": ("With output_format jpeg only." + _only_for("output_compression"))}


# One entry per field parse_request knows, in the order a reader meets them.
_PROPERTIES: dict[str, Callable[[], dict[str, Any]]] = {
    "prompt": _prompt,
    "size": _size,
    "n": _n,
    "quality": _quality,
    "style": lambda: _choice("style", _STYLES, f"{models.DALL_E_3}; dropped (and recorded) for gpt-image."),
    "response_format": lambda: _choice("response_format", _RESPONSE_FORMATS, "What this service returns; url links to the archived copy."),
    "output_format": lambda: _choice("output_format", _OUTPUT_FORMATS),
    "output_compression": _output_compression,
    "background": lambda: _choice("background", _BACKGROUNDS, "transparent needs output_format png."),
    "moderation": lambda: _choice("moderation", _MODERATIONS),
    "user": lambda: {"type": "string", "maxLength": models.USER_MAX_CHARS},
    "model": lambda: {"type": "string", "description": "Deployment name (v1 path); elsewhere the deployment or its family, or absent."},
}


def generation_schema() -> dict[str, Any]:
    """The JSON schema of a generation request body; ValueError if a field parse_request knows has no entry here."""
    missing = models.KNOWN_FIELDS - set(_PROPERTIES)
    if missing:
        raise ValueError(f"the OpenAPI schema has no entry for {', '.join(sorted(missing))}; add one to shared/api/schema.py")
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {name: build() for name, build in _PROPERTIES.items() if name in models.KNOWN_FIELDS},
    }


_STATUS_TEXTS = [
    (400, "Invalid request or content filtered"),
    (404, "Unknown deployment"),
    (413, "Body too large"),
    (415, "Body is not JSON"),
    (429, "Upstream throttling; see Retry-After"),
    (502, "Upstream failure"),
    (503, "Storage or credential unavailable"),
    (504, "Upstream timeout"),
]
_ERROR_EXAMPLE = {"error": {"code": "...", "message": "...", "param": "..."}}


def generation_openapi() -> dict[str, Any]:
    """``openapi_extra`` of the generation routes: the request body and the error responses."""
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": generation_schema()}}},
        "responses": {
            str(status): {"description": text, "content": {"application/json": {"example": _ERROR_EXAMPLE}}} for status, text in _STATUS_TEXTS
        },
    }
