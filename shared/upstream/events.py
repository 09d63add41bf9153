"""Server-sent events from the images API, read as they arrive, one event in memory at most.

A streamed answer (``"stream": true``) is ``text/event-stream``: blocks of ``field: value`` lines
ended by a blank line, where upstream sends ``event: <type>`` then ``data: <JSON>``. A partial
image's data is handed on in pieces as they arrive (:class:`SsePiece`), never held whole or parsed
into Python strings; other events (an error) are kept until their blank line. The completed event's data, the final image, goes
straight into an :class:`~shared.upstream.body.ImageBodyReader` while it streams in: its base64 is
decoded chunk by chunk, so the final image is in memory once, as bytes.

Everything upstream sends is bounded: a line outside image data at :data:`MAX_LINE_BYTES`, an event
at the size of the largest image allowed in base64 plus :data:`EVENT_SLACK_BYTES`. Comments (``:``)
and ``id``/``retry`` fields are ignored, as the SSE specification says. Lines end in LF or CRLF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.upstream.body import ImageBodyReader
from shared.upstream.errors import NOT_REPEATED, upstream_error

MAX_LINE_BYTES = 4096  # an event type, a comment, an id: short
EVENT_SLACK_BYTES = 256 * 1024  # what an event carries beside its image


def decoded_event(kind: str) -> bool:
    """True for the event whose image is decoded (the final one), not handed on raw."""
    return kind.endswith(".completed")


def passed_event(kind: str) -> bool:
    """True for the events handed on piece by piece as they arrive (partial images)."""
    return kind.endswith(".partial_image")


@dataclass
class SseEvent:
    """One event that ended: its type, and its raw data (an error, an unknown event), its decoded data (the final
    image), or nothing more (``passed``: a partial image whose data went out as :class:`SsePiece` s)."""

    kind: str  # the ``event:`` line ("" when upstream sent none)
    data: bytes | bytearray = b""  # the data lines, joined by "\n"
    decoded: ImageBodyReader | None = None  # the final image's data, decoded while it arrived
    passed: bool = False


@dataclass(frozen=True)
class SsePiece:
    """A piece of a passed event's data, as it arrived; ``line`` marks the first piece of each data line."""

    kind: str
    data: bytes
    line: bool


@dataclass
class EventReader:
    """Splits the bytes of a stream into events and pieces; :meth:`feed` returns what a chunk completed, in order."""

    max_image_bytes: int
    _kind: str = ""
    _data: bytearray = field(default_factory=bytearray)
    _has_data: bool = False
    _decoder: ImageBodyReader | None = None
    _line: bytearray = field(default_factory=bytearray)
    _streaming: bool = False  # inside a data line that goes on as it arrives (to the decoder, or out as pieces)
    _size: int = 0  # bytes of the current event so far

    @property
    def max_event_bytes(self) -> int:
        return (self.max_image_bytes + 2) // 3 * 4 + EVENT_SLACK_BYTES

    def feed(self, chunk: bytes) -> list[SseEvent | SsePiece]:
        """Take the next chunk; the events it ended and the pieces it carried. ServiceError (a final 502) when
        upstream breaks a bound."""
        out: list[SseEvent | SsePiece] = []
        position, end = 0, len(chunk)
        while position < end:
            newline = chunk.find(b"\n", position)
            stop = end if newline < 0 else newline
            self._count(stop - position)
            if self._streaming:
                piece = chunk[position:stop]
                self._sink(piece[:-1] if newline >= 0 and piece.endswith(b"\r") else piece, out, line=False)
                self._streaming = newline < 0
            else:
                self._line += chunk[position:stop]
                if len(self._line) > MAX_LINE_BYTES and not self._line.startswith(b"data"):
                    raise upstream_error(f"The model service streamed a line over {MAX_LINE_BYTES} bytes outside image data. {NOT_REPEATED}")
                if newline < 0:
                    self._start_streaming(out)
                else:
                    event = self._line_ended(bytes(self._line[:-1] if self._line.endswith(b"\r") else self._line), out)
                    self._line.clear()
                    if event is not None:
                        out.append(event)
            position = end if newline < 0 else newline + 1
        return out

    def _count(self, size: int) -> None:
        self._size += size
        if self._size > self.max_event_bytes:
            raise upstream_error(f"The model service streamed an event over {self.max_event_bytes} bytes. {NOT_REPEATED}")

    def _sink(self, data: bytes, out: list[SseEvent | SsePiece], *, line: bool) -> None:
        """Where a streamed data line's bytes go: the decoder of the final image, or out as a piece."""
        if self._decoder is not None:
            if line and self._has_data:
                self._decoder.feed(b"\n")
            self._decoder.feed(data)
        elif data or line:
            out.append(SsePiece(self._kind, data, line))
        self._has_data = True

    def _start_streaming(self, out: list[SseEvent | SsePiece]) -> bool:
        """A data line of an event that goes on as it arrives: its bytes so far go on, the rest follows them."""
        line = self._line
        if not line.startswith(b"data:") or not (decoded_event(self._kind) or passed_event(self._kind)) or len(line) < 6:
            return False
        if decoded_event(self._kind):
            self._decoder = self._decoder or ImageBodyReader(self.max_image_bytes, max_images=1)
        self._sink(bytes(line[6:] if line[5:6] == b" " else line[5:]), out, line=True)
        line.clear()
        self._streaming = True
        return True

    def _line_ended(self, line: bytes, out: list[SseEvent | SsePiece]) -> SseEvent | None:
        if not line:
            return self._dispatch()
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            self._kind = value.decode("utf-8", "replace")
        elif name == b"data":
            self._line[:] = line
            if self._start_streaming(out):
                self._streaming = False  # the whole line was here
            else:
                if self._has_data:
                    self._data += b"\n"
                self._data += value
                self._has_data = True
        return None  # a comment (":..."), "id", "retry" or an unknown field: ignored

    def _dispatch(self) -> SseEvent | None:
        passed = passed_event(self._kind) and self._decoder is None
        event = SseEvent(self._kind, self._data, self._decoder, passed=passed) if self._has_data else None
        self._kind, self._has_data, self._decoder, self._size = "", False, None, 0
        self._data = bytearray()
        return event

    def finish(self) -> None:
        """The stream ended: ServiceError if it ended inside an event (cut, not finished)."""
        if self._has_data or self._line or self._streaming:
            raise upstream_error(f"The model service's stream ended inside an event. {NOT_REPEATED}")
