"""The generation request's schema in OpenAPI, built from the model family rows (shared/models/families.py).

Bounds and choices are read from the rules parse_request enforces, never restated here, so
the published schema cannot drift from the checks (tests/test_api.py holds one to the other).
The schema is the union over families; each property says which families differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shared import models
from shared.models import Rules


def _families(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _rules() -> dict[str, Rules]:
    """Every family the service accepts, with its rules (announced families have none yet)."""
    return {row.name: row.rules for row in models.TABLE if row.rules is not None}


def _only_for(field: str) -> str:
    """The sentence naming the families that take ``field``, or "" when every family does."""
    takers = [family for family, allowed in models.FIELDS_BY_FAMILY.items() if field in allowed]
    return "" if len(takers) == len(models.FIELDS_BY_FAMILY) else f" Only for {_families(takers)}."


def _by_family(values: Callable[[Rules], Iterable[str]]) -> str:
    """"fam-a, fam-b: x, y. fam-c: z" — families grouped by the values they accept."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for family, rules in _rules().items():
        if found := tuple(values(rules)):
            groups.setdefault(found, []).append(family)
    return " ".join(f"{_families(names)}: {', '.join(found)}." for found, names in groups.items())


def _rule_choice(field: str, values: Callable[[Rules], Iterable[str]], description: str = "") -> dict[str, Any]:
    """An enum over the values any family accepts for ``field``, saying which family takes which."""
    union = list(dict.fromkeys(v for rules in _rules().values() for v in values(rules)))
    text = f"{description} {_by_family(values)}{_only_for(field)}".strip()
    return {"type": "string", "enum": union, "description": text}


def _prompt() -> dict[str, Any]:
    by_limit: dict[int, list[str]] = {}
    for family, limit in models.PROMPT_LIMITS.items():
        by_limit.setdefault(limit, []).append(family)
    limits = "; ".join(f"{_families(names)}: 1-{limit}" for limit, names in sorted(by_limit.items()))
    return {"type": "string", "minLength": 1, "maxLength": max(models.PROMPT_LIMITS.values()), "description": f"Characters: {limits}."}


def _size_rule_text(rules: Rules) -> Iterable[str]:
    rule = rules.size_rule
    if rule is not None:
        yield (
            f"WIDTHxHEIGHT with edges multiples of {rule.edge_multiple}, long edge under {rule.max_edge_exclusive}, "
            f"at most {rule.max_ratio}:1, {rule.min_pixels:,}-{rule.max_pixels:,} pixels"
        )
    yield from (f"{a} (translated to {b})" for a, b in rules.seed_sizes.items())


def _size() -> dict[str, Any]:
    examples = list(dict.fromkeys(size for rules in _rules().values() for size in rules.sizes))
    return {
        "type": "string",
        "examples": examples,
        "description": f"{_by_family(lambda r: r.sizes)} Also: {_by_family(_size_rule_text)}",
    }


def _n() -> dict[str, Any]:
    maxima = {family: rules.max_n for family, rules in _rules().items()}
    text = "; ".join(f"{family}: 1-{top}" for family, top in sorted(maxima.items()))
    return {"type": "integer", "minimum": 1, "maximum": max(maxima.values()), "description": f"Images: {text}."}


def _quality() -> dict[str, Any]:
    return _rule_choice("quality", lambda r: (*r.qualities, *r.seed_qualities), "Seed values (standard, hd) are translated for gpt-image.")


def _output_compression() -> dict[str, Any]:
    low, high = models.OUTPUT_COMPRESSION_RANGE
    return {"type": "integer", "minimum": low, "maximum": high, "description": ("With output_format jpeg only." + _only_for("output_compression"))}


# One entry per field parse_request knows, in the order a reader meets them.
_PROPERTIES: dict[str, Callable[[], dict[str, Any]]] = {
    "prompt": _prompt,
    "size": _size,
    "n": _n,
    "quality": _quality,
    "style": lambda: _rule_choice("style", lambda r: r.styles, "Sent to dall-e-3; dropped (and recorded) for gpt-image."),
    "response_format": lambda: {
        "type": "string",
        "enum": list(models.RESPONSE_FORMATS),
        "description": "What this service returns; url links to the archived copy.",
    },
    "output_format": lambda: _rule_choice("output_format", lambda r: r.output_formats),
    "output_compression": _output_compression,
    "background": lambda: _rule_choice("background", lambda r: r.backgrounds, "transparent needs output_format png."),
    "moderation": lambda: _rule_choice("moderation", lambda r: r.moderations),
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
