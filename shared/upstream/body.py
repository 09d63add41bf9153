"""The streaming decoder of the images API's 200 answer: each ``b64_json`` string decoded as it arrives.

The image arrives as a multi-megabyte base64 string inside JSON. Holding the body,
then a decoded JSON string, then the image would keep about four copies per request
in memory and scan the bytes three times (BENCHMARKS.md has the measurements).
"""

from __future__ import annotations

import binascii
import json
import uuid
from enum import Enum, auto
from typing import Any

import pybase64

from shared.upstream.errors import image_too_large, invalid_base64

_B64_KEY = b"b64_json"
_JSON_ESCAPES = {ord("/"): b"/", ord('"'): b'"', ord("\\"): b"\\", ord("b"): b"\b", ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_NOT_BASE64 = b"\x00"  # what an escape that is not valid JSON becomes: certainly not base64


class Base64Value:
    """One ``b64_json`` string, decoded as its chunks arrive, with the checks a whole-string decode makes in
    the same order: the size cap first (on the text's length), then strict base64 (what
    ``b64decode(validate=True)`` accepts)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.chars = 0
        self.rest = b""  # 0-3 characters waiting for a full quantum
        self.padded = False
        self.too_large = False
        self.invalid = False

    def feed(self, text: bytes | memoryview) -> None:
        """Decode the next piece of the (unescaped) string; errors are kept for :meth:`finish`."""
        self.chars += len(text)
        if not self.too_large and self.chars * 3 // 4 > self.limit + 3:
            self.too_large, self.parts = True, []
        if self.too_large or self.invalid or not text:
            return
        buffer = self.rest + bytes(text) if self.rest else text
        whole = len(buffer) - len(buffer) % 4
        if whole:
            try:
                if self.padded:  # padding is only allowed at the very end
                    raise binascii.Error("data after padding")
                self.parts.append(pybase64.b64decode(buffer[:whole], validate=True))  # ~50x faster than binascii (bench)
            except (binascii.Error, ValueError):
                self.invalid, self.parts = True, []
                return
            self.padded = buffer[whole - 1 : whole] == b"="
        self.rest = bytes(buffer[whole:])

    def finish(self) -> bytes:
        """The decoded bytes; ServiceError if the string was too large or not base64."""
        if self.too_large:
            raise image_too_large(self.limit)
        if self.invalid or self.rest:  # a partial quantum at the end: "Incorrect padding"
            raise invalid_base64()
        data = b"".join(self.parts)
        self.parts = []
        return data


class _Key(Enum):
    """Where the tokenizer stands between strings, as far as ``"b64_json": "..."`` is concerned."""

    NONE = auto()  # the next string is an ordinary one
    NAME = auto()  # the string just read was "b64_json"
    COLON = auto()  # ... and its colon followed: the next string is a b64_json value


class ImageBodyReader:
    """Reads a JSON answer chunk by chunk, decoding each ``"b64_json"`` string as it streams in.

    The small rest of the document (the skeleton) is kept with each ``b64_json`` value
    replaced by a placeholder, and the value goes straight through the base64 decoder.
    ``result()`` parses the skeleton; the caller takes each value's bytes where its
    placeholder is. JSON escapes inside a value (an escaped slash or a character written as
    a unicode escape) are honoured; what is not base64 once unescaped (malformed escapes,
    control characters) is invalid base64. Otherwise the answers are what ``json.loads``
    and ``b64decode(validate=True)`` give.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.skeleton = bytearray()
        self.values: list[Base64Value] = []
        self._value: Base64Value | None = None  # inside a b64_json string
        self._in_string = False  # inside some other string (kept in the skeleton)
        self._escaped = False  # the previous byte of that string was a backslash
        self._string: bytearray | None = bytearray()  # that string's first bytes (None once too long to be the key)
        self._key = _Key.NONE
        self._carry = b""  # an escape sequence split across chunks, inside a b64_json value
        self.marker = f"\x00{uuid.uuid4().hex}:"  # placeholder prefix; a NUL and a nonce no upstream string carries

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body."""
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        position, end = 0, len(data)
        while position < end:
            if self._value is not None:
                position = self._feed_value(self._value, data, position)
            elif self._in_string:
                position = self._feed_string(data, position)
            else:
                position = self._feed_structure(data, position)

    def _feed_value(self, value: Base64Value, data: bytes, position: int) -> int:
        end = len(data)
        quote = data.find(b'"', position)
        stop = end if quote < 0 else quote
        backslash = data.find(b"\\", position, stop)
        if backslash < 0:
            value.feed(memoryview(data)[position:stop])
            if quote >= 0:
                self._value = None
            return end if quote < 0 else quote + 1
        value.feed(memoryview(data)[position:backslash])
        if backslash + 1 >= end:
            self._carry = data[backslash:]
            return end
        kind = data[backslash + 1]
        if kind != ord("u"):
            value.feed(_JSON_ESCAPES.get(kind, _NOT_BASE64))
            return backslash + 2
        if backslash + 6 > end:
            self._carry = data[backslash:]
            return end
        try:
            value.feed(chr(int(data[backslash + 2 : backslash + 6], 16)).encode("utf-8"))
        except ValueError:
            value.feed(_NOT_BASE64)
        return backslash + 6

    def _feed_string(self, data: bytes, position: int) -> int:
        end = len(data)
        scan = position
        while scan < end:
            if self._escaped:
                self._escaped = False
                scan += 1
                continue
            quote = data.find(b'"', scan)
            backslash = data.find(b"\\", scan, end if quote < 0 else quote)
            if backslash >= 0:
                self._escaped = True
                scan = backslash + 1
                continue
            if quote < 0:
                break
            self._remember(data[position:quote])
            self.skeleton += data[position : quote + 1]
            self._in_string = False
            self._key = _Key.NAME if self._string == _B64_KEY else _Key.NONE
            return quote + 1
        self._remember(data[position:end])
        self.skeleton += data[position:end]
        return end

    def _remember(self, text: bytes) -> None:
        if self._string is not None:
            self._string += text
            if len(self._string) > len(_B64_KEY):
                self._string = None

    def _feed_structure(self, data: bytes, position: int) -> int:
        quote = data.find(b'"', position)
        stop = len(data) if quote < 0 else quote
        for byte in data[position:stop]:  # between strings: punctuation, numbers, literals (a few bytes)
            if byte in b" \t\r\n":
                continue
            self._key = _Key.COLON if (self._key is _Key.NAME and byte == ord(":")) else _Key.NONE
        self.skeleton += data[position:stop]
        if quote < 0:
            return stop
        if self._key is _Key.COLON:
            self._value = Base64Value(self.limit)
            self.skeleton += json.dumps(f"{self.marker}{len(self.values)}").encode()
            self.values.append(self._value)
        else:
            self.skeleton += b'"'
            self._in_string = True
            self._string = bytearray()
        self._key = _Key.NONE
        return quote + 1

    def result(self) -> Any:
        """The parsed document, b64_json strings replaced by placeholders (see :meth:`image`); ValueError if not JSON."""
        if self._value is not None or self._in_string or self._carry:
            raise ValueError("the body ends inside a string")
        return json.loads(bytes(self.skeleton))

    def image(self, placeholder: str) -> bytes | None:
        """The decoded bytes a placeholder stands for (ServiceError if they were not valid), or None if it is not one."""
        if not placeholder.startswith(self.marker):
            return None
        index = placeholder[len(self.marker) :]
        if not index.isdigit() or int(index) >= len(self.values):
            return None
        return self.values[int(index)].finish()
