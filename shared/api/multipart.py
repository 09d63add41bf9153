"""Reading a multipart/form-data body as it streams in (python-multipart), with the limits applied on the way.

The body is never held whole: each part's bytes are collected as they arrive; a text
field's are joined when it ends, a file's are left as the chunks they came in (joining
tens of megabytes takes tens of milliseconds: the caller does it off the event loop). What breaks a limit is refused while it streams in, before the
rest is read: the declared Content-Length, the running total, each file's size, each
text field's size, the text fields' count and their size together, and the number of
files (413, or 400 naming the parameter or the body).

The parser is fed at most :data:`SLICE_BYTES` at a time, however large the chunks the
server hands over (the Functions host hands over the whole body at once), so the few
places where python-multipart walks byte by byte in Python cannot run long: transport
padding after a boundary that outlasts a slice is refused. The boundary itself must be
what RFC 2046 allows (1-70 characters of its alphabet), else a 400 naming the body.

Which parts are files is decided by the parts themselves (a ``filename`` in the
Content-Disposition); what the files are is decided later, from their bytes.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from shared.echo import capped, shown
from shared.errors import ServiceError, invalid
from shared.streams import declares_more_than

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict the package defines for type checkers only

# RFC 2046 section 5.1.1: 1-70 of these characters, the last one not a space.
BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
SLICE_BYTES = 32 * 1024  # what the parser is given at once (a slice of padding costs a few ms of Python)
_PADDING = getattr(MultipartState, "BOUNDARY_PADDING", None)  # python-multipart's state between a boundary and its CRLF


@dataclass(frozen=True)
class Limits:
    """What one form may hold."""

    total_bytes: int
    file_bytes: int
    field_bytes: int  # each text field, and all of them together
    max_files: int
    file_fields: Collection[str]  # the part names that may (and must) carry files
    max_fields: int = 64  # text fields: far more than any request has, far fewer than a flood


@dataclass
class Form:
    """A form as read: text fields by name, files as (part name, its bytes in chunks) in the order sent."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, list[bytes]]] = field(default_factory=list)


def too_large(what: str, limit: int, param: str | None = None) -> ServiceError:
    """413 for a body, file or field over its limit."""
    return ServiceError(413, "request_too_large", f"{what} is larger than {limit} bytes.", param=param)


def malformed(why: str) -> ServiceError:
    """400 naming the body: it is not a multipart/form-data body this service can read."""
    return invalid(None, f"The multipart/form-data body is malformed: {why}.", "invalid_multipart")


class _Reader:
    """python-multipart's callbacks: one part at a time, checked as its bytes arrive."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.form = Form()
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._text_bytes = 0  # every text field so far, together
        self.parts = 0  # parts begun so far

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        self._disposition, self._chunks, self._size = b"", [], 0

    def _header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise invalid(None, "A form part has no name (Content-Disposition: form-data; name=...).", "invalid_multipart")
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options
        name, files, limits = capped(self._name), self.limits.file_fields, self.limits
        if self._is_file and self._name not in files:
            raise invalid(name, f"Unknown parameter: {shown(self._name)} carries a file; files go in {', '.join(files)}.", "unknown_parameter")
        if not self._is_file and self._name in files:
            raise invalid(name, f"{name} must be a file (a part with a filename), not text.", "invalid_type")
        if self._is_file and len(self.form.files) >= limits.max_files:
            raise invalid(name, f"At most {limits.max_files} files (images and mask) can be sent, got more.")
        if not self._is_file and self._name in self.form.fields:
            raise invalid(name, f"{shown(self._name)} was sent more than once.")
        if not self._is_file and len(self.form.fields) >= limits.max_fields:
            raise invalid(None, f"The multipart/form-data body has more than {limits.max_fields} text fields; an edit takes a handful.", "too_many_fields")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        limits = self.limits
        if self._size > (limits.file_bytes if self._is_file else limits.field_bytes):
            what = "file" if self._is_file else "field"
            raise too_large(f"The {what} {shown(self._name)}", limits.file_bytes if self._is_file else limits.field_bytes, capped(self._name))
        if not self._is_file:
            self._text_bytes += end - start
            if self._text_bytes > limits.field_bytes:
                raise too_large("The form's text fields together", limits.field_bytes)
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        chunks, self._chunks = self._chunks, []
        if self._is_file:
            self.form.files.append((self._name, chunks))
            return
        try:
            self.form.fields[self._name] = b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            name = capped(self._name)
            raise invalid(name, f"{name} is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None

    def _end(self) -> None:
        self.ended = True


def boundary_of(content_type: str) -> bytes:
    """The boundary a multipart/form-data Content-Type names; 400 naming the body unless RFC 2046 allows it."""
    try:
        media, options = parse_options_header(content_type)
    except ValueError:  # text that is not Latin-1 (what HTTP headers are)
        media, options = b"", {}
    if media != b"multipart/form-data" or not options.get(b"boundary"):
        raise invalid(None, "A multipart/form-data body needs a boundary in its Content-Type.", "invalid_multipart")
    boundary = options[b"boundary"].decode("latin-1")
    if not BOUNDARY.fullmatch(boundary):
        raise invalid(
            None,
            f"The multipart/form-data body's boundary {shown(boundary)} is not one RFC 2046 allows: 1-70 letters, digits or "
            "'()+_,-./:=? (a space only inside).",
            "invalid_multipart",
        )
    return boundary.encode("latin-1")


class FormParser:
    """Feeds a body to python-multipart a slice at a time and keeps its padding from running on."""

    def __init__(self, boundary: bytes, limits: Limits) -> None:
        self.reader = _Reader(limits)
        self._parser = MultipartParser(boundary, self.reader.callbacks())
        self._padded_at: int | None = None  # the part count when a slice last ended in padding

    def write(self, chunk: bytes) -> None:
        """Parse ``chunk``; ServiceError for what breaks a rule or a limit."""
        view = memoryview(chunk)
        for start in range(0, len(view), SLICE_BYTES):
            self._write(bytes(view[start : start + SLICE_BYTES]))

    def _write(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except FormParserError as exc:
            raise malformed(str(exc).rstrip(".")) from None
        if _PADDING is None or self._parser.state != _PADDING:
            self._padded_at = None
            return
        if self._padded_at == self.reader.parts:  # the whole slice was padding: no client pads a boundary like that
            raise malformed(f"the padding after a boundary runs over {SLICE_BYTES} bytes")
        self._padded_at = self.reader.parts

    def finish(self) -> Form:
        """The form, once the body has ended; 400 naming the body when it ended early."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise malformed(str(exc).rstrip(".")) from None
        if not self.reader.ended:
            raise invalid(None, "The multipart/form-data body ends before its closing boundary.", "invalid_multipart")
        return self.reader.form


async def read_form(request: Request, limits: Limits) -> Form:
    """The request's form, or a ServiceError (413 over a limit, 400 malformed or breaking a rule) as soon as it shows."""
    boundary = boundary_of(request.headers.get("content-type", ""))
    if declares_more_than(request.headers.get("content-length"), limits.total_bytes):
        raise too_large("The request body", limits.total_bytes)
    parser = FormParser(boundary, limits)
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.total_bytes:
            raise too_large("The request body", limits.total_bytes)
        parser.write(chunk)
    return parser.finish()
