"""Property-based tests of request parsing and the JSON reader: no input makes them fail any other way.

Whatever JSON value arrives (as an HTTP body or inside a queue message), ``parse_request``
gives a checked ``ImageRequest`` or a 400 ``ServiceError``, for every family and both path
styles; never another exception. What it accepts can be stored and sent; what it refuses
can be answered. Strings are drawn from all of Unicode, with unpaired surrogates, controls
and invisible characters made common, since those are where the last bugs were.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import strictjson
from shared.echo import ECHO_LIMIT
from shared.errors import ServiceError
from shared.models import FAMILIES, KNOWN_FIELDS, ImageRequest, parse_request, rules_of
from shared.models.text import has_visible

FAMILY_NAMES = sorted(FAMILIES)
DEPLOYMENTS = ["images-prod", *FAMILY_NAMES]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

# Characters that broke promises before, made frequent: surrogates, controls, invisible and format characters.
_TROUBLE = st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\ufeff", "\u2800", "\u3164", "\u0301", "\t", "\n", " ", "\U0001f600"])
_CHARS = st.one_of(st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), _TROUBLE)
TEXT = st.text(_CHARS, max_size=40)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)

# Values near the rules, so parsing gets past the first check as often as it stops there.
_NEAR: dict[str, st.SearchStrategy[Any]] = {
    "prompt": st.one_of(TEXT, st.just("a cat on a mat")),
    "size": st.one_of(st.sampled_from(["auto", "1024x1024", "1536x1024", "1792x1024", "1024x1792", "2048x1152", "4096x4096"]), st.from_regex(r"[0-9]{1,6}x[0-9]{1,6}", fullmatch=True), TEXT),
    "n": st.one_of(st.integers(min_value=-2, max_value=12), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    "quality": st.sampled_from(["standard", "hd", "low", "medium", "high", "auto", "HD"]),
    "style": st.sampled_from(["vivid", "natural", "cinematic"]),
    "response_format": st.sampled_from(["url", "b64_json", "b64"]),
    "output_format": st.sampled_from(["png", "jpeg", "webp"]),
    "output_compression": st.integers(min_value=-5, max_value=105),
    "background": st.sampled_from(["auto", "opaque", "transparent"]),
    "moderation": st.sampled_from(["auto", "low", "high"]),
    "user": TEXT,
    "model": st.sampled_from(DEPLOYMENTS),
    "stream": st.booleans(),
    "partial_images": st.integers(min_value=-1, max_value=4),
}
NEAR_BODIES = st.fixed_dictionaries({"prompt": _NEAR["prompt"]}, optional={name: st.one_of(_NEAR[name], JSON_VALUES) for name in sorted(KNOWN_FIELDS - {"prompt"})})
BODIES = st.one_of(JSON_VALUES, NEAR_BODIES, st.builds(lambda body, extra: {**body, **extra}, NEAR_BODIES, st.dictionaries(TEXT, JSON_VALUES, max_size=2)))


def _storable(value: Any) -> None:
    json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _check_accepted(request: ImageRequest, family: str) -> None:
    _storable(request.asked)
    _storable(request.upstream_body)
    prompt = request.upstream_body["prompt"]
    assert has_visible(prompt)
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", prompt + request.asked.get("user", ""))
    assert len(prompt) <= rules_of(family).prompt_max_chars
    assert 1 <= request.n <= rules_of(family).max_n
    assert request.response_format in ("url", "b64_json")
    assert "model" not in request.upstream_body
    assert request.stream == (request.upstream_body.get("stream") is True)
    assert not request.stream or (request.n == 1 and 0 <= request.partial_images <= 3)


def _check_refused(error: ServiceError) -> None:
    assert error.status == 400
    assert error.code in (
        "invalid_type", "missing_required_parameter", "unknown_parameter", "invalid_value", "invalid_encoding", "string_above_max_length",
        "unsupported_value",
    )  # fmt: skip
    _storable(error.body())
    assert len(error.message) < 1000
    assert error.param is None or (len(error.param) <= ECHO_LIMIT + 1 and error.param.isprintable())


@PROPERTY
@given(body=BODIES, family=st.sampled_from(FAMILY_NAMES), deployment=st.sampled_from(DEPLOYMENTS), v1=st.booleans())
def test_any_body_gives_a_request_or_a_400(body: Any, family: str, deployment: str, v1: bool) -> None:
    try:
        request = parse_request(body, deployment, family, api_style_v1=v1)
    except ServiceError as error:
        _check_refused(error)
    else:
        _check_accepted(request, family)


@PROPERTY
@given(body=BODIES, family=st.sampled_from(FAMILY_NAMES))
def test_parsing_never_changes_the_body(body: Any, family: str) -> None:
    before = json.dumps(body, sort_keys=True, default=str, ensure_ascii=True)
    try:
        parse_request(body, "images-prod", family)
    except ServiceError:
        pass
    assert json.dumps(body, sort_keys=True, default=str, ensure_ascii=True) == before


# --- the JSON reader ---

_BRACKETS = st.text(st.sampled_from('[]{}"\\:,1 a'), max_size=400)


@PROPERTY
@given(data=st.one_of(st.binary(max_size=300), _BRACKETS.map(str.encode), st.builds(lambda d: b"[" * d + b"]" * d, st.integers(0, 3000))))
def test_any_bytes_give_a_value_or_a_400(data: bytes) -> None:
    try:
        strictjson.decode(data)
    except ServiceError as error:
        assert (error.status, error.code) in ((400, "invalid_json"), (400, "invalid_encoding"))
        _storable(error.body())


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@PROPERTY
@given(value=JSON_VALUES.filter(lambda v: _depth(v) <= strictjson.MAX_DEPTH))
def test_json_written_by_anyone_is_read_back_as_written(value: Any) -> None:
    # Surrogates survive as JSON escapes: the reader's job is the JSON, parse_request's the text in it.
    assert strictjson.decode(json.dumps(value)) == value
    assert strictjson.decode(json.dumps(value).encode()) == value
