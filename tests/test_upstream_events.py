"""The reader of upstream's server-sent events (shared/upstream/events.py): any split of the bytes, every bound."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ServiceError
from shared.upstream.events import EVENT_SLACK_BYTES, MAX_LINE_BYTES, EventReader, SseEvent, SsePiece

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
B64 = base64.b64encode(IMAGE).decode()


def event(kind: str, data: dict[str, object], newline: str = "\n") -> bytes:
    return f"event: {kind}{newline}data: {json.dumps(data)}{newline}{newline}".encode()


STREAM = (
    b": keep-alive\n\n"
    + event("image_generation.partial_image", {"type": "image_generation.partial_image", "b64_json": B64, "partial_image_index": 0})
    + event("image_generation.completed", {"type": "image_generation.completed", "b64_json": B64, "usage": {"output_tokens": 7}}, "\r\n")
)


def read(data: bytes, cuts: list[int], limit: int = 10**6) -> list[SseEvent | SsePiece]:
    reader, out, last = EventReader(limit), [], 0
    for cut in [*sorted(cuts), len(data)]:
        out += reader.feed(data[last:cut])
        last = cut
    reader.finish()
    return out


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_gives_the_same_partial_bytes_and_the_decoded_image(cuts: list[int]) -> None:
    out = read(STREAM, cuts)
    pieces = [item for item in out if isinstance(item, SsePiece)]
    events = [item for item in out if isinstance(item, SseEvent)]
    assert pieces[0].line and not any(p.line for p in pieces[1:])
    assert json.loads(b"".join(p.data for p in pieces))["b64_json"] == B64  # passed on exactly, in pieces
    assert [(e.kind, e.passed) for e in events] == [("image_generation.partial_image", True), ("image_generation.completed", False)]
    decoded = events[1].decoded
    assert decoded is not None
    fields = decoded.result()
    assert decoded.image(fields["b64_json"]) == IMAGE and fields["usage"] == {"output_tokens": 7}


def test_an_error_event_is_kept_whole() -> None:
    (error,) = read(b'event: error\ndata: {"type": "error",\ndata: "error": {"code": "x"}}\n\n', [20])
    assert isinstance(error, SseEvent) and json.loads(error.data) == {"type": "error", "error": {"code": "x"}}


def test_a_stream_cut_inside_an_event_is_an_error() -> None:
    with pytest.raises(ServiceError, match="ended inside an event") as caught:
        read(STREAM[: len(STREAM) // 2], [])
    assert caught.value.status == 502 and not caught.value.transient


def test_an_event_over_the_bound_is_an_error_before_it_is_held() -> None:
    reader = EventReader(1000)
    huge = b"event: error\ndata: " + b"x" * (4 * 1000 // 3 + EVENT_SLACK_BYTES + 10)
    with pytest.raises(ServiceError, match="event over"):
        reader.feed(huge)


def test_a_long_line_outside_data_is_an_error() -> None:
    with pytest.raises(ServiceError, match="line over"):
        EventReader(10**6).feed(b"event: " + b"x" * (MAX_LINE_BYTES + 1))
