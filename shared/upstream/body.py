"""The streaming decoder of the images API's 200 answer: each ``b64_json`` string decoded as it arrives.

The image arrives as a multi-megabyte base64 string inside JSON. Holding the body,
then a decoded JSON string, then the image would keep about four copies per request
in memory and scan the bytes three times (BENCHMARKS.md has the measurements).

Everything else in the answer is small, and kept small whatever upstream sends: the rest of
the document (the skeleton) is capped at :data:`MAX_SKELETON_BYTES`, each string in it is cut
at :data:`MAX_STRING_BYTES` (a 400 MB ``revised_prompt`` costs 16 KB), nesting deeper than
:data:`MAX_DEPTH` ends the reading, only the first ``max_images`` values are kept, and the
skeleton is parsed as strict JSON (:mod:`shared.strictjson`: no NaN, no duplicate keys).
"""

from __future__ import annotations

import binascii
import json
import uuid
from enum import Enum, auto
from typing import Any

import pybase64

from shared import strictjson
from shared.upstream.errors import NOT_REPEATED, image_too_large, invalid_base64, upstream_error

MAX_DEPTH = strictjson.MAX_DEPTH
MAX_SKELETON_BYTES = 256 * 1024
MAX_STRING_BYTES = 16 * 1024

_B64_KEY = b"b64_json"
_JSON_ESCAPES = {ord("/"): b"/", ord('"'): b'"', ord("\\"): b"\\", ord("b"): b"\b", ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_NOT_BASE64 = b"\x00"  # what an escape that is not valid JSON becomes: certainly not base64


class Base64Value:
    """One ``b64_json`` string, decoded as its chunks arrive, with the checks a whole-string decode makes in
    the same order: the size cap first (on the text's length), then strict base64 (what
    ``b64decode(validate=True)`` accepts)."""

    def __init__(self, limit: int, *, keep: bool = True) -> None:
        self.limit = limit
        self.keep = keep  # False: checked as it streams, its bytes dropped (an image beyond the n asked for)
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
                decoded = pybase64.b64decode(buffer[:whole], validate=True)  # ~50x faster than binascii (bench)
                if self.keep:
                    self.parts.append(decoded)
            except (binascii.Error, ValueError):
                self.invalid, self.parts = True, []
                return
            self.padded = buffer[whole - 1 : whole] == b"="
        self.rest = bytes(buffer[whole:])

    def finish(self) -> bytes:
        """The decoded bytes; ServiceError if the string was too large or not base64."""
        if self.too_large:
            raise image_too_large(self.limit)
        # A partial quantum at the end is "Incorrect padding", but b64decode ignores one or two
        # surplus "=" after whole, unpadded quanta ("AAAA=" is b"\0\0\0"): so does this.
        surplus_padding = self.rest in (b"=", b"==") and not self.padded and self.chars > len(self.rest)
        if self.invalid or (self.rest and not surplus_padding):
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

    def __init__(self, limit: int, *, max_images: int | None = None) -> None:
        self.limit = limit
        self.max_images = max_images
        self.error: str | None = None  # why the body is unusable; once set, the rest is not read
        self.skeleton = bytearray()
        self._depth = 0
        self._string_start = 0  # where the current skeleton string's text starts
        self._string_cut = False  # ... and whether it was longer than MAX_STRING_BYTES
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
        while position < end and self.error is None:
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
            self._keep_string(data[position:quote])
            if self._string_cut:
                self._cut_string()
            self.skeleton += b'"'
            self._in_string = False
            self._key = _Key.NAME if self._string == _B64_KEY else _Key.NONE
            return quote + 1
        self._remember(data[position:end])
        self._keep_string(data[position:end])
        return end

    def _keep_string(self, text: bytes) -> None:
        room = MAX_STRING_BYTES - (len(self.skeleton) - self._string_start)
        if len(text) > room:
            text, self._string_cut = text[: max(room, 0)], True
        self._grow(text)

    def _cut_string(self) -> None:
        """End a string cut at MAX_STRING_BYTES where its text is whole (not inside an escape or a UTF-8 sequence)."""
        raw = bytes(self.skeleton[self._string_start :])
        text = ""
        for end in range(len(raw), max(len(raw) - 12, -1), -1):
            try:
                text = json.loads(b'"' + raw[:end] + b'"')
                break
            except ValueError:
                continue
        del self.skeleton[self._string_start :]
        self.skeleton += json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass")[1:-1]

    def _grow(self, data: bytes | bytearray) -> None:
        self.skeleton += data
        if len(self.skeleton) > MAX_SKELETON_BYTES:
            self.error = f"more than {MAX_SKELETON_BYTES} bytes outside the image data"

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
            self._nest(byte)
        self._grow(data[position:stop])
        if quote < 0:
            return stop
        if self._key is _Key.COLON:
            keep = self.max_images is None or len(self.values) < self.max_images
            self._value = Base64Value(self.limit, keep=keep)
            self._grow(json.dumps(f"{self.marker}{len(self.values)}").encode())
            self.values.append(self._value)
        else:
            self._grow(b'"')
            self._in_string = True
            self._string = bytearray()
            self._string_start, self._string_cut = len(self.skeleton), False
        self._key = _Key.NONE
        return quote + 1

    def _nest(self, byte: int) -> None:
        if byte in b"[{":
            self._depth += 1
            if self._depth > MAX_DEPTH:
                self.error = f"nested deeper than {MAX_DEPTH} levels"
        elif byte in b"]}":
            self._depth -= 1

    def result(self) -> Any:
        """The parsed document, b64_json strings replaced by placeholders (see :meth:`image`).

        ServiceError (a final 502) if a bound was passed; ValueError if the body is not strict JSON."""
        if self.error is not None:
            raise upstream_error(f"The model service answered with {self.error}. {NOT_REPEATED}")
        if self._value is not None or self._in_string or self._carry:
            raise ValueError("the body ends inside a string")
        return strictjson.loads(bytes(self.skeleton))

    def image(self, placeholder: str) -> bytes | None:
        """The decoded bytes a placeholder stands for (ServiceError if they were not valid), or None if it is not one."""
        if not placeholder.startswith(self.marker):
            return None
        index = placeholder[len(self.marker) :]
        if not index.isdigit() or int(index) >= len(self.values):
            return None
        value = self.values[int(index)]
        if not value.keep:
            raise upstream_error(f"The model service answered with more images than the {self.max_images} asked for.")
        return value.finish()
