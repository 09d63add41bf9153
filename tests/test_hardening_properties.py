"""Properties over inputs nobody thought of (hypothesis): the parsers either answer or refuse in their own terms.

- A queue message, any bytes or any JSON value (raw or base64): ``decode_message`` gives the value or
  raises ``ValueError``; ``parse_job_message`` gives a job or raises ``ServiceError``. Nothing else.
- An upstream 200 body, any JSON document in any chunking: ``ImageBodyReader`` gives what
  ``json.loads`` + ``b64decode`` give, or a ``ServiceError`` (too deep), never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import ServiceError
from shared.jobs.messages import JobMessage, decode_message, parse_job_message
from shared.upstream import ImageBodyReader
from shared.upstream.body import MAX_DEPTH

LIMIT = 300  # decoded image bytes a b64_json value may carry here

any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)  # lone surrogates often
numbers = st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | any_text
job_keys = st.sampled_from(["id", "deployment", "prompt", "n", "size", "b64_json", "data"]) | any_text


def json_values(keys: st.SearchStrategy[str] = job_keys, leaves: st.SearchStrategy[Any] = scalars) -> st.SearchStrategy[Any]:
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=20)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# --------------------------------------------------------------------------- queue messages


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_decode_to_a_value_or_a_refusal(raw: bytes) -> None:
    try:
        value = decode_message(raw)
    except ValueError:
        return
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")  # strict JSON, storable as UTF-8


@given(json_values(), st.booleans())
def test_any_json_value_decodes_to_itself_unless_it_cannot_be_stored(value: Any, encoded: bool) -> None:
    text = json.dumps(value)
    raw = base64.b64encode(text.encode()).decode() if encoded else text
    if has_lone_surrogate(value):
        try:
            decode_message(raw)
        except ValueError:
            return
        raise AssertionError("a lone surrogate was accepted")
    assert decode_message(raw) == value


@given(st.integers(1, 3 * MAX_DEPTH))
def test_nesting_beyond_the_limit_is_refused_not_a_recursion_error(depth: int) -> None:
    text = '{"prompt": "x", "user": ' + nested(depth) + "}"
    if depth + 1 > MAX_DEPTH:
        try:
            decode_message(text)
        except ValueError:
            return
        raise AssertionError(f"depth {depth + 1} accepted")
    assert decode_message(text)["user"] is not None


def test_a_very_deep_message_is_refused() -> None:
    for depth in (1000, 5000, 100_000):
        try:
            decode_message(nested(depth))
        except ValueError:
            continue
        raise AssertionError(depth)


@given(json_values())
def test_any_decoded_value_is_a_job_or_a_service_error(value: Any) -> None:
    try:
        job = parse_job_message(value, "message-1", "gpt-image-1-mini")
    except ServiceError as error:
        assert error.status == 400 and error.message
        return
    assert isinstance(job, JobMessage) and job.job_id and job.deployment
    assert json.loads(job.encode())["id"] == job.job_id


# --------------------------------------------------------------------------- the upstream body


b64_strings = st.binary(max_size=LIMIT // 2).map(lambda b: base64.b64encode(b).decode()) | st.text(alphabet="AB=+/ x", max_size=12)
image_items = st.fixed_dictionaries({"b64_json": b64_strings}, optional={"revised_prompt": any_text, "x": json_values()})
documents = st.fixed_dictionaries(
    {"created": numbers, "data": st.lists(image_items, max_size=3)}, optional={"usage": json_values(), "b64_json": b64_strings}
)


def reference(body: bytes) -> Any:
    """What json.loads + b64decode give: the document with each b64_json string replaced by its bytes (or why not)."""
    document = json.loads(body)

    def decode(value: str) -> Any:
        if len(value) * 3 // 4 > LIMIT + 3:
            return "large"
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "invalid"

    return walk(document, decode)


def walk(value: Any, decode: Any) -> Any:
    if isinstance(value, dict):
        return {k: decode(v) if k == "b64_json" and isinstance(v, str) else walk(v, decode) for k, v in value.items()}
    if isinstance(value, list):
        return [walk(v, decode) for v in value]
    return value


def streamed(body: bytes, cuts: list[int]) -> Any:
    reader = ImageBodyReader(LIMIT)
    position = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        reader.feed(body[position:cut])
        position = max(position, cut)
    document = reader.result()

    def decode(value: str) -> Any:
        try:
            image = reader.image(value)
        except ServiceError as error:
            return "large" if "larger" in error.message else "invalid"
        assert image is not None, "every b64_json string of the document is streamed"
        return image

    return walk(document, decode)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.lists(st.integers(0, 2000), max_size=8), st.booleans())
def test_the_streamed_body_reader_matches_json_loads_and_b64decode(document: dict[str, Any], cuts: list[int], ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if has_lone_surrogate(document):
        try:
            streamed(body, cuts)
        except (ValueError, ServiceError):
            return
        raise AssertionError("a lone surrogate was accepted")
    assert streamed(body, cuts) == reference(body)


@given(st.integers(1, 3 * MAX_DEPTH), st.lists(st.integers(0, 400), max_size=4))
def test_the_body_reader_refuses_nesting_beyond_the_limit(depth: int, cuts: list[int]) -> None:
    body = ('{"data": [], "usage": ' + nested(depth) + "}").encode()
    if depth + 1 > MAX_DEPTH:
        try:
            streamed(body, cuts)
        except ServiceError as error:
            assert error.status == 502 and not error.transient
            return
        raise AssertionError(f"depth {depth + 1} accepted")
    assert streamed(body, cuts)["usage"] is not None
