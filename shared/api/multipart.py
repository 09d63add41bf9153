"""Reading a multipart/form-data body as it streams in (python-multipart), with the limits applied on the way.

The body is never held whole: each part's bytes are collected as they arrive and joined
once when the part ends. What breaks a limit is refused while it streams in, before the
rest is read: the declared Content-Length, the running total, each file's size, each
text field's size and the number of files (413, or 400 naming the parameter).

Which parts are files is decided by the parts themselves (a ``filename`` in the
Content-Disposition); what the files are is decided later, from their bytes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from shared.errors import ServiceError, invalid
from shared.streams import declares_more_than

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict the package defines for type checkers only


@dataclass(frozen=True)
class Limits:
    """What one form may hold."""

    total_bytes: int
    file_bytes: int
    field_bytes: int
    max_files: int
    file_fields: Collection[str]  # the part names that may (and must) carry files


@dataclass
class Form:
    """A form as read: text fields by name, files as (part name, bytes) in the order sent."""

    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, bytes]] = field(default_factory=list)


def too_large(what: str, limit: int, param: str | None = None) -> ServiceError:
    """413 for a body, file or field over its limit."""
    return ServiceError(413, "request_too_large", f"{what} is larger than {limit} bytes.", param=param)


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
        files = self.limits.file_fields
        if self._is_file and self._name not in files:
            raise invalid(self._name, f"Unknown parameter: {self._name!r} carries a file; files go in {', '.join(files)}.", "unknown_parameter")
        if not self._is_file and self._name in files:
            raise invalid(self._name, f"{self._name} must be a file (a part with a filename), not text.", "invalid_type")
        if self._is_file and len(self.form.files) >= self.limits.max_files:
            raise invalid(self._name, f"At most {self.limits.max_files} files (images and mask) can be sent, got more.")
        if not self._is_file and self._name in self.form.fields:
            raise invalid(self._name, f"{self._name} was sent more than once.")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        limit = self.limits.file_bytes if self._is_file else self.limits.field_bytes
        if self._size > limit:
            raise too_large(f"The {'file' if self._is_file else 'field'} {self._name!r}", limit, self._name)
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        data = b"".join(self._chunks)
        self._chunks = []
        if self._is_file:
            self.form.files.append((self._name, data))
            return
        try:
            self.form.fields[self._name] = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(self._name, f"{self._name} is not valid UTF-8 (byte {exc.start}).", "invalid_encoding") from None

    def _end(self) -> None:
        self.ended = True


def _boundary(content_type: str) -> bytes:
    media, options = parse_options_header(content_type)
    if media != b"multipart/form-data" or not options.get(b"boundary"):
        raise invalid(None, "A multipart/form-data body needs a boundary in its Content-Type.", "invalid_multipart")
    return options[b"boundary"]


async def read_form(request: Request, limits: Limits) -> Form:
    """The request's form, or a ServiceError (413 over a limit, 400 malformed or breaking a rule) as soon as it shows."""
    boundary = _boundary(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    if declares_more_than(declared, limits.total_bytes):
        raise too_large("The request body", limits.total_bytes)
    reader = _Reader(limits)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limits.total_bytes:
                raise too_large("The request body", limits.total_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise invalid(None, f"The multipart/form-data body is malformed: {exc}.", "invalid_multipart") from None
    if not reader.ended:
        raise invalid(None, "The multipart/form-data body ends before its closing boundary.", "invalid_multipart")
    return reader.form
