"""Model families, their rules, request parsing and translation.

Every parameter is checked here before anything goes upstream. A seed-style
(DALL-E 3) request to a gpt-image deployment is translated, not refused, and
what was translated or dropped is recorded in ``ImageRequest.translations``.

The rules are the model-rules table of the design notes; :func:`parse_request`
is the one entry point. It is pure (no I/O), so the HTTP route and the queue
handler share it and tests call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from shared.errors import invalid

DALL_E_3 = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_1_MINI = "gpt-image-1-mini"
GPT_IMAGE_1_5 = "gpt-image-1.5"
GPT_IMAGE_2 = "gpt-image-2"
FAMILIES = frozenset({DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5, GPT_IMAGE_2})
GPT_IMAGE_FAMILIES = FAMILIES - {DALL_E_3}


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
    translations: list[str] = field(default_factory=list)  # e.g. "quality: 'hd' -> 'high'", "style: 'vivid' dropped (...)"

    @property
    def content_type(self) -> str:
        return "image/png" if self.output_format == "png" else "image/jpeg"

    @property
    def extension(self) -> str:
        return "png" if self.output_format == "png" else "jpg"


# Fields every family accepts. style and response_format are DALL-E 3 words, kept for
# every family because seed-style clients send them to gpt-image deployments too.
_COMMON_FIELDS = frozenset({"prompt", "size", "n", "quality", "style", "response_format", "user", "model"})
_GPT_IMAGE_ONLY_FIELDS = frozenset({"output_format", "output_compression", "background", "moderation"})
KNOWN_FIELDS = _COMMON_FIELDS | _GPT_IMAGE_ONLY_FIELDS
FIELDS_BY_FAMILY: Mapping[str, frozenset[str]] = MappingProxyType(
    {family: _COMMON_FIELDS if family == DALL_E_3 else KNOWN_FIELDS for family in FAMILIES}
)

PROMPT_LIMITS: Mapping[str, int] = MappingProxyType(
    {DALL_E_3: 4000, GPT_IMAGE_1: 32000, GPT_IMAGE_1_MINI: 32000, GPT_IMAGE_1_5: 32000, GPT_IMAGE_2: 32000}
)
USER_MAX_CHARS = 256

DALL_E_3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
GPT_IMAGE_1_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
# The seed's wide and tall sizes do not exist on gpt-image-1/-mini/-1.5; the nearest size with
# the same orientation keeps DALL-E 3 clients working instead of refusing them.
_SEED_SIZE_TRANSLATIONS = {"1792x1024": "1536x1024", "1024x1792": "1024x1536"}

GPT_IMAGE_2_EDGE_MULTIPLE = 16
GPT_IMAGE_2_MAX_EDGE_EXCLUSIVE = 3840
GPT_IMAGE_2_MAX_RATIO = 3
GPT_IMAGE_2_MIN_PIXELS = 655_360
GPT_IMAGE_2_MAX_PIXELS = 8_294_400
# ASCII digits only: \d would also take other scripts' digits, and fullmatch (not $) refuses a trailing newline.
_SIZE_PATTERN = re.compile(r"([0-9]+)x([0-9]+)")

_DALL_E_3_QUALITIES = ("standard", "hd")
_GPT_IMAGE_QUALITIES = ("low", "medium", "high", "auto")
_SEED_QUALITY_TRANSLATIONS = {"hd": "high", "standard": "medium"}
_STYLES = ("vivid", "natural")
_RESPONSE_FORMATS = ("url", "b64_json")
_OUTPUT_FORMATS = ("png", "jpeg")
_BACKGROUNDS = ("auto", "opaque", "transparent")
_MODERATIONS = ("auto", "low")
_MAX_N = 10


def parse_request(body: object, deployment: str, family: str, *, api_style_v1: bool = False) -> ImageRequest:
    """Check a decoded JSON request body for ``deployment`` (running ``family``) and translate it.

    ``api_style_v1`` says the caller used ``POST /openai/v1/images/generations``, where
    ``model`` names the deployment; elsewhere ``model`` may only repeat the deployment or
    its family. A JSON ``null`` counts as "not given" (SDKs send it for unset options).

    Raises ``ServiceError`` (400, ``invalid_request_error``) naming the parameter, with code
    ``invalid_type``, ``missing_required_parameter``, ``unknown_parameter``, ``invalid_value``
    or ``string_above_max_length``. Raises ``ValueError`` for a family this module does not
    know: that is a configuration bug, not the caller's fault.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(sorted(FAMILIES))}")
    if not isinstance(body, dict):
        raise invalid(None, f"The request body must be a JSON object, got {_json_type(body)}.", "invalid_type")

    allowed = FIELDS_BY_FAMILY[family]
    accepted = ", ".join(sorted(allowed))
    for name in body:
        if name not in KNOWN_FIELDS:
            raise invalid(name, f"Unknown parameter: {_show(name)}. {family} accepts: {accepted}.", "unknown_parameter")
    given = {name: value for name, value in body.items() if value is not None}
    for name in given:
        if name not in allowed:
            raise invalid(
                name,
                f"Unknown parameter: {name!r} is not supported by {family} (deployment {_show(deployment)}); "
                f"it applies only to gpt-image models. {family} accepts: {accepted}.",
                "unknown_parameter",
            )

    _check_model(given.get("model"), deployment, family, api_style_v1)
    _check_prompt(given.get("prompt"), family)
    if "user" in given:
        user = _string("user", given["user"])
        if len(user) > USER_MAX_CHARS:
            raise invalid(
                "user", f"user must be at most {USER_MAX_CHARS} characters, got {len(user)}.", "string_above_max_length"
            )

    if family == DALL_E_3:
        return _dall_e_3(given, deployment)
    return _gpt_image(given, deployment, family)


def _dall_e_3(given: dict[str, Any], deployment: str) -> ImageRequest:
    translations: list[str] = []
    if "size" in given:
        _choice("size", given["size"], DALL_E_3_SIZES, DALL_E_3)
    if "n" in given:
        n = _integer("n", given["n"])
        if n != 1:
            raise invalid("n", f"n must be 1 for {DALL_E_3} (one image per request), got {n}.")
    if "quality" in given:
        _choice("quality", given["quality"], _DALL_E_3_QUALITIES, DALL_E_3)
    if "style" in given:
        _choice("style", given["style"], _STYLES, DALL_E_3)
    response_format = _response_format(given)
    if "response_format" in given and response_format == "url":
        translations.append(
            "response_format: 'url' kept by this service; upstream asked for 'b64_json' "
            "(the image is archived and linked, so there is no second download)"
        )

    upstream = _copy(given, ("prompt", "size", "n", "quality", "style", "user"))
    # Base64 from upstream avoids fetching its 24-hour URL again; the caller's choice is honoured by this service.
    upstream["response_format"] = "b64_json"
    return ImageRequest(
        deployment=deployment,
        family=DALL_E_3,
        asked=dict(given),
        upstream_body=upstream,
        response_format=response_format,
        n=1,
        output_format="png",
        translations=translations,
    )


def _gpt_image(given: dict[str, Any], deployment: str, family: str) -> ImageRequest:
    translations: list[str] = []
    upstream = _copy(given, ("prompt",))

    if "size" in given:
        size = _string("size", given["size"])
        if family == GPT_IMAGE_2:
            _check_gpt_image_2_size(size)
        elif size in _SEED_SIZE_TRANSLATIONS:
            upstream_size = _SEED_SIZE_TRANSLATIONS[size]
            translations.append(f"size: {size!r} -> {upstream_size!r} ({family} has no {size}; nearest size, same orientation)")
            size = upstream_size
        else:
            _choice("size", size, GPT_IMAGE_1_SIZES, family, also=tuple(_SEED_SIZE_TRANSLATIONS))
        upstream["size"] = size

    n = 1
    if "n" in given:
        n = _integer("n", given["n"])
        if not 1 <= n <= _MAX_N:
            raise invalid("n", f"n must be between 1 and {_MAX_N} for {family}, got {n}.")
        upstream["n"] = n

    if "quality" in given:
        quality = _choice("quality", given["quality"], _GPT_IMAGE_QUALITIES, family, also=tuple(_SEED_QUALITY_TRANSLATIONS))
        if quality in _SEED_QUALITY_TRANSLATIONS:
            translated = _SEED_QUALITY_TRANSLATIONS[quality]
            translations.append(f"quality: {quality!r} -> {translated!r}")
            quality = translated
        upstream["quality"] = quality

    if "style" in given:
        style = _choice("style", given["style"], _STYLES, family)
        translations.append(f"style: {style!r} dropped ({family} has no style)")

    response_format = _response_format(given)
    if "response_format" in given:
        translations.append(
            f"response_format: {response_format!r} kept by this service, not sent upstream (gpt-image always returns base64)"
        )

    output_format: Literal["png", "jpeg"] = "png"
    if "output_format" in given:
        if _choice("output_format", given["output_format"], _OUTPUT_FORMATS, family) == "jpeg":
            output_format = "jpeg"
        upstream["output_format"] = output_format

    if "output_compression" in given:
        compression = _integer("output_compression", given["output_compression"])
        if not 0 <= compression <= 100:
            raise invalid("output_compression", f"output_compression must be between 0 and 100, got {compression}.")
        if output_format != "jpeg":
            raise invalid(
                "output_compression",
                f"output_compression applies only to output_format 'jpeg', but output_format is {output_format!r}"
                f"{'' if 'output_format' in given else ' (the default)'}; send output_format 'jpeg' or drop output_compression.",
            )
        upstream["output_compression"] = compression

    if "background" in given:
        background = _choice("background", given["background"], _BACKGROUNDS, family)
        if background == "transparent" and output_format != "png":
            raise invalid(
                "background",
                f"background 'transparent' needs output_format 'png', but output_format is {output_format!r}; "
                "send output_format 'png' or background 'opaque' or 'auto'.",
            )
        upstream["background"] = background

    if "moderation" in given:
        upstream["moderation"] = _choice("moderation", given["moderation"], _MODERATIONS, family)
    if "user" in given:
        upstream["user"] = given["user"]

    return ImageRequest(
        deployment=deployment,
        family=family,
        asked=dict(given),
        upstream_body=upstream,
        response_format=response_format,
        n=n,
        output_format=output_format,
        translations=translations,
    )


def _check_model(model: object, deployment: str, family: str, api_style_v1: bool) -> None:
    # model never goes upstream: the upstream client adds it on the paths that need it, and on the
    # deployment-scoped path it makes Azure answer 404 "The model ... does not exist".
    if model is None:
        return
    name = _string("model", model)
    if api_style_v1:
        if name != deployment:
            raise invalid("model", f"model must name the deployment {_show(deployment)} on this path, got {_show(name)}.")
    elif name not in (deployment, family):
        raise invalid(
            "model",
            f"model {_show(name)} does not match deployment {_show(deployment)} (model family {family}); "
            "send the deployment name or the family, or leave model out.",
        )


def _check_prompt(prompt: object, family: str) -> None:
    if prompt is None:
        raise invalid("prompt", "prompt is required: a description of the image to generate.", "missing_required_parameter")
    text = _string("prompt", prompt)
    if not text.strip():
        raise invalid("prompt", "prompt must not be empty or only whitespace.")
    limit = PROMPT_LIMITS[family]
    # len() counts code points, the "characters" of the limit, not UTF-8 bytes.
    if len(text) > limit:
        raise invalid(
            "prompt", f"prompt must be at most {limit} characters for {family}, got {len(text)}.", "string_above_max_length"
        )


def _check_gpt_image_2_size(size: str) -> None:
    if size == "auto":
        return
    match = _SIZE_PATTERN.fullmatch(size)
    if match is None:
        raise invalid("size", f"size must be 'auto' or WIDTHxHEIGHT in pixels (e.g. '1536x1024'), got {_show(size)}.")
    width_text, height_text = match.groups()
    if width_text.startswith("0") or height_text.startswith("0"):
        raise invalid("size", f"size edges must be positive whole numbers without leading zeros, got {_show(size)}.")
    limit = GPT_IMAGE_2_MAX_EDGE_EXCLUSIVE
    # Long digit strings are refused before int(): they are far too large, and int() of thousands of digits raises.
    if max(len(width_text), len(height_text)) > len(str(limit)):
        raise invalid("size", f"size edges must be less than {limit} pixels for {GPT_IMAGE_2}, got {_show(size)}.")
    width, height = int(width_text), int(height_text)
    long_edge, short_edge = max(width, height), min(width, height)
    multiple = GPT_IMAGE_2_EDGE_MULTIPLE
    if width % multiple or height % multiple:
        raise invalid("size", f"size edges must be multiples of {multiple} for {GPT_IMAGE_2}, got {size!r}.")
    if long_edge >= limit:
        raise invalid("size", f"size edges must be less than {limit} pixels for {GPT_IMAGE_2}, got {size!r}.")
    if long_edge > GPT_IMAGE_2_MAX_RATIO * short_edge:
        raise invalid(
            "size",
            f"size may be at most {GPT_IMAGE_2_MAX_RATIO}:1 between its long and short edge for {GPT_IMAGE_2}, "
            f"got {size!r} ({long_edge / short_edge:.2f}:1).",
        )
    pixels = width * height
    if not GPT_IMAGE_2_MIN_PIXELS <= pixels <= GPT_IMAGE_2_MAX_PIXELS:
        raise invalid(
            "size",
            f"size must have between {GPT_IMAGE_2_MIN_PIXELS:,} and {GPT_IMAGE_2_MAX_PIXELS:,} pixels for {GPT_IMAGE_2}, "
            f"got {size!r} ({pixels:,}).",
        )


def _response_format(given: dict[str, Any]) -> Literal["url", "b64_json"]:
    # The default is a link to the archived copy for every family, whatever upstream returns.
    if "response_format" not in given:
        return "url"
    return "b64_json" if _choice("response_format", given["response_format"], _RESPONSE_FORMATS) == "b64_json" else "url"


def _choice(name: str, value: object, allowed: tuple[str, ...], family: str | None = None, also: tuple[str, ...] = ()) -> str:
    """``value`` if it is one of ``allowed`` or ``also`` (accepted, translated by the caller)."""
    text = _string(name, value)
    if text not in allowed and text not in also:
        where = f" for {family}" if family else ""
        extra = f" (or {', '.join(map(repr, also))}, translated)" if also else ""
        raise invalid(name, f"{name} must be one of {', '.join(map(repr, allowed))}{extra}{where}, got {_show(text)}.")
    return text


def _string(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise invalid(name, f"{name} must be a string, got {_json_type(value)}.", "invalid_type")
    return value


def _integer(name: str, value: object) -> int:
    # JSON true/false decode to bool, a subclass of int; 1.0 decodes to float. Neither is an integer here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be an integer, got {_json_type(value)}.", "invalid_type")
    return value


def _copy(given: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: given[name] for name in names if name in given}


def _json_type(value: object) -> str:
    """How a decoded JSON value is named in a message, with the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {_show(value)}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    # Caller text goes into messages; cap it so a huge key or value cannot bloat the error body.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
