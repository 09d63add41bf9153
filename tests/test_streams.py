"""Capped reads: a declared length over the cap is refused unread, a body that grows past it as soon as it does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.streams import declares_more_than, read_capped


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class TooLarge(Exception):
    pass


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, False), ("", False), ("10", False), ("11", True), ("²", False), ("1e3", False), (" 11", False), ("-5", False)],
)
def test_only_ascii_digits_declare_a_length(header: str | None, expected: bool) -> None:
    assert declares_more_than(header, 10) is expected


async def test_a_body_within_the_cap_is_read_whole() -> None:
    assert await read_capped(chunks(b"abc", b"def"), "6", 6, TooLarge()) == b"abcdef"


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    read: list[bytes] = []

    async def watched() -> AsyncIterator[bytes]:
        read.append(b"x")
        yield b"x"

    with pytest.raises(TooLarge):
        await read_capped(watched(), "7", 6, TooLarge())
    assert read == []


async def test_a_body_that_lies_about_its_length_is_refused_once_past_the_cap() -> None:
    with pytest.raises(TooLarge):
        await read_capped(chunks(b"abcd", b"efg"), "2", 6, TooLarge())
