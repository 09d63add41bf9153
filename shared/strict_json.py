"""JSON from outside, read strictly: UTF-8, bounded nesting, no NaN or Infinity, no key given twice.

Python's ``json`` recurses once per nesting level, so about 1,000 levels raise
``RecursionError`` (not ``ValueError``) from deep inside the decoder. The depth is
therefore measured before parsing, by a linear scan of the brackets outside strings.
A key given twice would silently take its last value; it is refused instead, so what
was checked is what the caller meant.

:func:`decode` is pure and shared: the HTTP body reader uses it, and a queue message's
JSON can be read with it too. Every refusal is a 400 ``ServiceError`` (``invalid_json``
or ``invalid_encoding``).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from shared.echo import shown
from shared.errors import invalid

# Deepest nesting accepted: a request body is one level deep, a queue message two or three.
MAX_DEPTH = 32

# A JSON string, closed or not: an unclosed one runs to the end, so the scan stays linear.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Each bracket as a signed byte: +1 opens a level, -1 closes one.
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def decode(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``data`` (UTF-8 bytes or text), or a 400 ServiceError saying what is wrong."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(None, f"The body is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None
    else:
        text = data
    if too_deep(text, max_depth):
        raise invalid(None, f"The body is not valid JSON: nested deeper than {max_depth} levels.", "invalid_json")
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # JSONDecodeError, a number too long for int(), a constant
        raise invalid(None, f"The body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:  # unreachable within MAX_DEPTH; kept so no input can escape as a crash
        raise invalid(None, "The body is not valid JSON: nested too deeply.", "invalid_json") from None


def too_deep(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """True when brackets outside strings open more than ``max_depth`` levels at some point."""
    # Regular expressions and accumulate() run in C: a 256 KiB body of brackets takes milliseconds.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= max_depth:
        return False
    steps = memoryview(brackets.encode("ascii").translate(_STEPS)).cast("b")
    return max(accumulate(steps)) > max_depth


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise invalid(None, f"The body is not valid JSON: the key {shown(key)} is given twice.", "invalid_json")
            seen.add(key)
    return found
