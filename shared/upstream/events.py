"""Server-sent events from the images API, read as they arrive, one event in memory at most.

A streamed answer (``"stream": true``) is ``text/event-stream``: blocks of ``field: value`` lines
ended by a blank line, where upstream sends ``event: <type>`` then ``data: <JSON>``. A partial
image's event is kept whole until its blank line (about one event of memory) and handed on as its
raw data, never parsed into Python strings. The completed event's data, the final image, goes
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


@dataclass
class SseEvent:
    """One event: its type, and either its raw data (a partial image, an error) or its decoded data (the final image)."""

    kind: str  # the ``event:`` line ("" when upstream sent none)
    data: bytes = b""  # the data lines, joined by "\n"
    decoded: ImageBodyReader | None = None  # the final image's data, decoded while it arrived


@dataclass
class EventReader:
    """Splits the bytes of a stream into :class:`SseEvent` s; :meth:`feed` returns the events a chunk completed."""

    max_image_bytes: int
    _kind: str = ""
    _data: bytearray = field(default_factory=bytearray)
    _has_data: bool = False
    _decoder: ImageBodyReader | None = None
    _line: bytearray = field(default_factory=bytearray)
    _streaming: bool = False  # inside a decoded event's data line: bytes go to the decoder
    _size: int = 0  # bytes of the current event so far

    @property
    def max_event_bytes(self) -> int:
        return (self.max_image_bytes + 2) // 3 * 4 + EVENT_SLACK_BYTES

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Take the next chunk; the events it ended. ServiceError (a final 502) when upstream breaks a bound."""
        events: list[SseEvent] = []
        position, end = 0, len(chunk)
        while position < end:
            newline = chunk.find(b"\n", position)
            stop = end if newline < 0 else newline
            self._count(stop - position)
            if self._streaming:
                piece = chunk[position:stop]
                assert self._decoder is not None
                self._decoder.feed(piece[:-1] if newline >= 0 and piece.endswith(b"\r") else piece)
                self._streaming = newline < 0
            else:
                self._line += chunk[position:stop]
                if len(self._line) > MAX_LINE_BYTES and not self._line.startswith(b"data"):
                    raise upstream_error(f"The model service streamed a line over {MAX_LINE_BYTES} bytes outside image data. {NOT_REPEATED}")
                if newline < 0:
                    self._start_streaming()
                else:
                    event = self._line_ended(bytes(self._line[:-1] if self._line.endswith(b"\r") else self._line))
                    self._line.clear()
                    if event is not None:
                        events.append(event)
            position = end if newline < 0 else newline + 1
        return events

    def _count(self, size: int) -> None:
        self._size += size
        if self._size > self.max_event_bytes:
            raise upstream_error(f"The model service streamed an event over {self.max_event_bytes} bytes. {NOT_REPEATED}")

    def _start_streaming(self) -> None:
        """A data line of the decoded event that has not ended yet: its bytes go to the decoder from now on."""
        if decoded_event(self._kind) and self._line.startswith(b"data:"):
            self._decoder = self._decoder or ImageBodyReader(self.max_image_bytes, max_images=1)
            if self._has_data:
                self._decoder.feed(b"\n")
            self._decoder.feed(bytes(self._line[5:]))
            self._line.clear()
            self._streaming = self._has_data = True

    def _line_ended(self, line: bytes) -> SseEvent | None:
        if not line:
            return self._dispatch()
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            self._kind = value.decode("utf-8", "replace")
        elif name == b"data":
            if decoded_event(self._kind):
                self._line[:] = line
                self._start_streaming()
                self._streaming = False  # the whole line was here
            else:
                if self._has_data:
                    self._data += b"\n"
                self._data += value
                self._has_data = True
        return None  # a comment (":..."), "id", "retry" or an unknown field: ignored

    def _dispatch(self) -> SseEvent | None:
        event = SseEvent(self._kind, bytes(self._data), self._decoder) if self._has_data else None
        self._kind, self._has_data, self._decoder, self._size = "", False, None, 0
        self._data.clear()
        return event

    def finish(self) -> None:
        """The stream ended: ServiceError if it ended inside an event (cut, not finished)."""
        if self._has_data or self._line or self._streaming:
            raise upstream_error(f"The model service's stream ended inside an event. {NOT_REPEATED}")
