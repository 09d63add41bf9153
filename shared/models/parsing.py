"""Request parsing and translation, following the family rows of :mod:`shared.models.families`.

Every parameter is checked here before anything goes upstream. A seed-style
(DALL-E 3) request to a gpt-image deployment is translated, not refused, and
what was translated or dropped is recorded in ``ImageRequest.translations``.

:func:`parse_request` is the one entry point. It is pure (no I/O), so the HTTP
route and the queue handler share it and tests call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from shared import telemetry
from shared.echo import capped
from shared.echo import shown as _show
from shared.errors import invalid
from shared.models.families import FAMILIES, Rules, SizeRule, rules_of
from shared.models.text import check_free_text, check_storable, has_visible

KNOWN_FIELDS: frozenset[str] = frozenset().union(*(rules_of(name).fields for name in FAMILIES))
FIELDS_BY_FAMILY: Mapping[str, frozenset[str]] = MappingProxyType({name: rules_of(name).fields for name in FAMILIES})
PROMPT_LIMITS: Mapping[str, int] = MappingProxyType({name: rules_of(name).prompt_max_chars for name in FAMILIES})
USER_MAX_CHARS = 256

# ASCII digits only: \d would also take other scripts' digits, and fullmatch (not $) refuses a trailing newline.
_SIZE_PATTERN = re.compile(r"([0-9]+)x([0-9]+)")
RESPONSE_FORMATS = ("url", "b64_json")  # what this service returns; not a model rule
OUTPUT_COMPRESSION_RANGE = (0, 100)


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
    stream: bool = False  # answered as server-sent events (shared/streaming.py)
    partial_images: int = 0  # partial images asked for (stream only)

    @property
    def content_type(self) -> str:
        return "image/png" if self.output_format == "png" else "image/jpeg"

    @property
    def extension(self) -> str:
        return "png" if self.output_format == "png" else "jpg"


def _validating(args: Mapping[str, Any]) -> Mapping[str, object]:
    return {"images.deployment": args["deployment"], "images.model_family": args["family"]}


def _validated(request: ImageRequest) -> Mapping[str, object]:
    body = request.upstream_body
    return {"images.n": request.n, "images.size": body.get("size"), "images.quality": body.get("quality"),
            "images.output_format": request.output_format,
            "images.prompt": request.asked.get("prompt")}  # prompts kept only with IMAGES_TELEMETRY_PROMPTS=true  # fmt: skip


@telemetry.traced("images.validate", telemetry.Steps(before=_validating, after=_validated, failures=True))
def parse_request(body: object, deployment: str, family: str, *, api_style_v1: bool = False) -> ImageRequest:
    """Check a decoded JSON request body for ``deployment`` (running ``family``) and translate it.

    ``api_style_v1`` says the caller used ``POST /openai/v1/images/generations``, where
    ``model`` names the deployment; elsewhere ``model`` may only repeat the deployment or
    its family. A JSON ``null`` counts as "not given" (SDKs send it for unset options).

    Raises ``ServiceError`` (400, ``invalid_request_error``) naming the parameter, with code
    ``invalid_type``, ``missing_required_parameter``, ``unknown_parameter``, ``invalid_value``,
    ``invalid_encoding`` (text that cannot be stored as UTF-8) or ``string_above_max_length``;
    free text follows :mod:`shared.models.text`. Raises ``ValueError`` for a family this module
    does not know: that is a configuration bug, not the caller's fault.
    """
    rules = rules_of(family)
    if not isinstance(body, dict):
        raise invalid(None, f"The request body must be a JSON object, got {_json_type(body)}.", "invalid_type")

    accepted = ", ".join(sorted(rules.fields))
    for name in body:
        check_storable(None, name)
        if name not in KNOWN_FIELDS:
            raise invalid(capped(name), f"Unknown parameter: {_show(name)}. {family} accepts: {accepted}.", "unknown_parameter")
    given = {name: value for name, value in body.items() if value is not None}
    if given.get("stream") is False:
        del given["stream"]  # "not streamed", which every family is
    if "stream" in given and rules.partial_images is None:
        streaming = ", ".join(sorted(name for name in FAMILIES if rules_of(name).partial_images is not None))
        raise invalid("stream", f"{family} does not stream partial images (deployment {_show(deployment)}); leave stream out. Families that stream: {streaming}.", "unsupported_value")
    for name in given:
        if name not in rules.fields:
            raise invalid(
                name,
                f"Unknown parameter: {name!r} is not supported by {family} (deployment {_show(deployment)}); "
                f"it applies only to gpt-image models. {family} accepts: {accepted}.",
                "unknown_parameter",
            )

    _check_model(given.get("model"), deployment, family, api_style_v1)
    _check_prompt(given.get("prompt"), family, rules)
    if "user" in given:
        user = _string("user", given["user"])
        if len(user) > USER_MAX_CHARS:
            raise invalid(
                "user", f"user must be at most {USER_MAX_CHARS} characters, got {len(user)}.", "string_above_max_length"
            )
        check_free_text("user", user)

    if rules.api == "dall-e":
        return _dall_e(given, deployment, family, rules)
    return _gpt_image(given, deployment, family, rules)


def _dall_e(given: dict[str, Any], deployment: str, family: str, rules: Rules) -> ImageRequest:
    translations: list[str] = []
    if "size" in given:
        _choice("size", given["size"], rules.sizes, family)
    if "n" in given:
        _check_n(given["n"], family, rules)
    if "quality" in given:
        _choice("quality", given["quality"], rules.qualities, family)
    if "style" in given:
        _choice("style", given["style"], rules.styles, family)
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
        family=family,
        asked=dict(given),
        upstream_body=upstream,
        response_format=response_format,
        n=1,
        output_format="png",
        translations=translations,
    )


def _gpt_image(given: dict[str, Any], deployment: str, family: str, rules: Rules) -> ImageRequest:
    translations: list[str] = []
    upstream = _copy(given, ("prompt",))
    if "size" in given:
        upstream["size"] = _gpt_size(_string("size", given["size"]), family, rules, translations)
    n = 1
    if "n" in given:
        n = upstream["n"] = _check_n(given["n"], family, rules)
    if "quality" in given:
        upstream["quality"] = _gpt_quality(given["quality"], family, rules, translations)
    if "style" in given:
        style = _choice("style", given["style"], rules.styles, family)
        translations.append(f"style: {style!r} dropped ({family} has no style)")

    response_format = _response_format(given)
    if "response_format" in given:
        translations.append(
            f"response_format: {response_format!r} kept by this service, not sent upstream (gpt-image always returns base64)"
        )
    output_format = _gpt_output(given, family, rules, upstream)
    if "moderation" in given:
        upstream["moderation"] = _choice("moderation", given["moderation"], rules.moderations, family)
    if "user" in given:
        upstream["user"] = given["user"]
    stream, partial_images = _stream(given, family, rules, n, upstream)

    return ImageRequest(
        deployment=deployment,
        family=family,
        asked=dict(given),
        upstream_body=upstream,
        response_format=response_format,
        n=n,
        output_format=output_format,
        translations=translations,
        stream=stream,
        partial_images=partial_images,
    )


def _stream(given: dict[str, Any], family: str, rules: Rules, n: int, upstream: dict[str, Any]) -> tuple[bool, int]:
    """``stream`` and ``partial_images`` as the family's rules allow them; both go upstream when streaming."""
    stream = given.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", f"stream must be true or false, got {_json_type(stream)}.", "invalid_type")
    partial_images = 0
    if "partial_images" in given:
        partial_images = _integer("partial_images", given["partial_images"])
        low, high = rules.partial_images or (0, 0)
        if not low <= partial_images <= high:
            raise invalid("partial_images", f"partial_images must be between {low} and {high} for {family}, got {partial_images}.")
        if partial_images and not stream:
            raise invalid("partial_images", "partial_images needs stream: true (partial images come only as server-sent events).")
    if stream:
        if n != 1:
            raise invalid("n", f"A streamed request makes one image (its events name no image); send n=1 or leave stream out, got n={n}.")
        upstream["stream"] = True
        if "partial_images" in given:
            upstream["partial_images"] = partial_images
    return stream, partial_images


def _check_n(value: object, family: str, rules: Rules) -> int:
    n = _integer("n", value)
    if rules.max_n == 1 and n != 1:
        raise invalid("n", f"n must be 1 for {family} (one image per request), got {n}.")
    if not 1 <= n <= rules.max_n:
        raise invalid("n", f"n must be between 1 and {rules.max_n} for {family}, got {n}.")
    return n


def _gpt_size(size: str, family: str, rules: Rules, translations: list[str]) -> str:
    if rules.size_rule is not None:
        if size not in rules.sizes:
            _check_free_size(size, family, rules.size_rule)
        return size
    if size in rules.seed_sizes:
        upstream_size = rules.seed_sizes[size]
        translations.append(f"size: {size!r} -> {upstream_size!r} ({family} has no {size}; nearest size, same orientation)")
        return upstream_size
    return _choice("size", size, rules.sizes, family, also=tuple(rules.seed_sizes))


def _gpt_quality(value: object, family: str, rules: Rules, translations: list[str]) -> str:
    quality = _choice("quality", value, rules.qualities, family, also=tuple(rules.seed_qualities))
    if quality in rules.seed_qualities:
        translated = rules.seed_qualities[quality]
        translations.append(f"quality: {quality!r} -> {translated!r}")
        return translated
    return quality


def _gpt_output(given: dict[str, Any], family: str, rules: Rules, upstream: dict[str, Any]) -> Literal["png", "jpeg"]:
    """output_format, output_compression and background, which depend on each other; fills ``upstream``."""
    output_format: Literal["png", "jpeg"] = "png"
    if "output_format" in given:
        if _choice("output_format", given["output_format"], rules.output_formats, family) == "jpeg":
            output_format = "jpeg"
        upstream["output_format"] = output_format

    if "output_compression" in given:
        compression = _integer("output_compression", given["output_compression"])
        low, high = OUTPUT_COMPRESSION_RANGE
        if not low <= compression <= high:
            raise invalid("output_compression", f"output_compression must be between {low} and {high}, got {compression}.")
        if output_format != "jpeg":
            raise invalid(
                "output_compression",
                f"output_compression applies only to output_format 'jpeg', but output_format is {output_format!r}"
                f"{'' if 'output_format' in given else ' (the default)'}; send output_format 'jpeg' or drop output_compression.",
            )
        upstream["output_compression"] = compression

    if "background" in given:
        background = _choice("background", given["background"], rules.backgrounds, family)
        if background == "transparent" and output_format != "png":
            raise invalid(
                "background",
                f"background 'transparent' needs output_format 'png', but output_format is {output_format!r}; "
                "send output_format 'png' or background 'opaque' or 'auto'.",
            )
        upstream["background"] = background
    return output_format


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


def _check_prompt(prompt: object, family: str, rules: Rules) -> None:
    if prompt is None:
        raise invalid("prompt", "prompt is required: a description of the image to generate.", "missing_required_parameter")
    text = _string("prompt", prompt)
    limit = rules.prompt_max_chars
    # len() counts code points, the "characters" of the limit, not UTF-8 bytes.
    if len(text) > limit:
        raise invalid(
            "prompt", f"prompt must be at most {limit} characters for {family}, got {len(text)}.", "string_above_max_length"
        )
    if not has_visible(text):
        raise invalid(
            "prompt", "prompt must not be empty or only whitespace, control or invisible characters: nothing in it would be drawn."
        )
    check_free_text("prompt", text)


def _check_free_size(size: str, family: str, rule: SizeRule) -> None:
    match = _SIZE_PATTERN.fullmatch(size)
    if match is None:
        raise invalid("size", f"size must be 'auto' or WIDTHxHEIGHT in pixels (e.g. '1536x1024'), got {_show(size)}.")
    width_text, height_text = match.groups()
    if width_text.startswith("0") or height_text.startswith("0"):
        raise invalid("size", f"size edges must be positive whole numbers without leading zeros, got {_show(size)}.")
    limit = rule.max_edge_exclusive
    # Long digit strings are refused before int(): they are far too large, and int() of thousands of digits raises.
    if max(len(width_text), len(height_text)) > len(str(limit)):
        raise invalid("size", f"size edges must be less than {limit} pixels for {family}, got {_show(size)}.")
    width, height = int(width_text), int(height_text)
    long_edge, short_edge = max(width, height), min(width, height)
    if width % rule.edge_multiple or height % rule.edge_multiple:
        raise invalid("size", f"size edges must be multiples of {rule.edge_multiple} for {family}, got {size!r}.")
    if long_edge >= limit:
        raise invalid("size", f"size edges must be less than {limit} pixels for {family}, got {size!r}.")
    if long_edge > rule.max_ratio * short_edge:
        raise invalid(
            "size",
            f"size may be at most {rule.max_ratio}:1 between its long and short edge for {family}, "
            f"got {size!r} ({long_edge / short_edge:.2f}:1).",
        )
    pixels = width * height
    if not rule.min_pixels <= pixels <= rule.max_pixels:
        raise invalid(
            "size",
            f"size must have between {rule.min_pixels:,} and {rule.max_pixels:,} pixels for {family}, "
            f"got {size!r} ({pixels:,}).",
        )


def _response_format(given: dict[str, Any]) -> Literal["url", "b64_json"]:
    # The default is a link to the archived copy for every family, whatever upstream returns.
    if "response_format" not in given:
        return "url"
    return "b64_json" if _choice("response_format", given["response_format"], RESPONSE_FORMATS) == "b64_json" else "url"


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
    check_storable(name, value)
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

