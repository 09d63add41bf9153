"""Strict, bounded JSON for text from outside: request bodies, queue messages and upstream answers.

``json.loads`` accepts what RFC 8259 does not (``NaN``, ``Infinity``), turns ``1e400`` into
infinity, lets a duplicate key silently win, hands back strings that cannot be stored as UTF-8
(a lone surrogate written as ``\\ud800``), and raises ``RecursionError`` on deep nesting (about
1,000 levels). :func:`loads` refuses all of these with :class:`JSONRefused` (a ``ValueError``),
checking the nesting depth before parsing, so no caller ever sees another exception.
:func:`decode` is the same for an HTTP body: every refusal a 400 ``invalid_json`` (or
``invalid_encoding``) in the Azure error shape, with lone surrogates left for the request's
own checks, which name the parameter that holds one.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from shared.errors import invalid

MAX_DEPTH = 32  # no document this service reads legitimately nests deeper than a handful of levels
MAX_INT_DIGITS = 40  # far beyond any count or timestamp; Python itself stops at 4,300 digits

# A JSON string, closed or not (an unclosed one runs to the end, so the scan stays linear),
# what is not a bracket, and each bracket as a signed byte: +1 opens a level, -1 closes one.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class JSONRefused(ValueError):
    """The text is not strict JSON, or is JSON this service does not take."""


def depth_of(text: str, limit: int = MAX_DEPTH) -> int:
    """How deep ``text`` nests arrays and objects (brackets inside strings do not count).

    Regular expressions and ``accumulate`` run in C: a 256 KiB body of brackets takes milliseconds.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    steps = memoryview(brackets.encode("ascii").translate(_STEPS)).cast("b")
    return max(0, max(accumulate(steps)))


def _refuse_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused(f"the number {text[:20]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONRefused(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JSONRefused(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, storable: bool = True) -> Any:
    """Parse strict JSON: no NaN or Infinity, finite numbers, bounded integers, unique keys, at most
    ``max_depth`` levels of nesting, text storable as UTF-8 (unless ``storable`` is False: then the
    caller checks that itself). :class:`JSONRefused` says why not."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    except UnicodeDecodeError as exc:
        raise JSONRefused(f"not UTF-8 (byte {exc.start})") from None
    if depth_of(text, max_depth) > max_depth:
        raise JSONRefused(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded_int, object_pairs_hook=_unique_keys
        )
    except JSONRefused:
        raise
    except RecursionError:  # the depth scan makes this unreachable; kept so no RecursionError ever escapes
        raise JSONRefused(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JSONRefused(str(exc)) from None
    if not storable:
        return value
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JSONRefused("a string holds a lone surrogate (text that cannot be stored as UTF-8)") from None
    return value


def decode(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """An HTTP body's JSON value, or a 400 ServiceError saying what is wrong (``invalid_encoding`` for bytes
    that are not UTF-8, ``invalid_json`` for the rest)."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(None, f"The body is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None
    try:
        return loads(data, max_depth=max_depth, storable=False)
    except JSONRefused as exc:
        raise invalid(None, f"The body is not valid JSON: {exc}.", "invalid_json") from None
