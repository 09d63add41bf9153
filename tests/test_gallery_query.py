"""The gallery's query parameters under hostile input: each is checked, a bad one a 400 naming it, never a 500.

The ``continuation`` token is the one that came back whole: property tests read any text as a
token (a deeply nested one raised RecursionError), and every token the gallery gives out reads
back as the place it names. In process, against Azurite, the index answers the bad ones.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import ServiceError
from shared.gallery.browse import GalleryQuery, decode_continuation, encode_continuation
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
TODAY = "2026-11-25"


def token_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HOSTILE_TOKENS = [
    token_of("[" * 5000 + "]" * 5000),  # RecursionError, a 500, before
    token_of("[" * 300 + "]" * 300)[:510],  # nested, within the length a token may have
    token_of('[["2026-11-25T10:00:00+00:00", "a"], "b"]'),
    token_of('["2026-11-25T10:00:00", "naive"]'),
    token_of('["2026-11-25T10:00:00+00:00", 7]'),
    token_of('{"a": 1, "b": 2}'),
    token_of('["2026-11-25T10:00:00+00:00", "a", "b"]'),
    token_of('["_index/x\\n"]'),  # a marker is printable ASCII
    token_of('[""]'),
    token_of('["' + "m" * 400 + '"]'),
    token_of("NaN"),
    token_of('["2026-11-25T10:00:00+00:00", "\\ud800"]'),
    token_of('["x", "y"]'),
    "x" * 10_000,
    "not-a-token",
    "%%%",
    "\u00e9t\u00e9",
]


@pytest.mark.parametrize("token", HOSTILE_TOKENS)
def test_a_token_the_gallery_did_not_give_out_is_a_400_naming_continuation(token: str) -> None:
    with pytest.raises(ServiceError) as caught:
        decode_continuation(token)
    assert (caught.value.status, caught.value.param) == (400, "continuation")


@PROPERTY
@given(token=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode())))
def test_any_text_is_a_place_or_a_400_naming_continuation(token: str) -> None:
    try:
        marker = decode_continuation(token)
    except ServiceError as error:
        assert (error.status, error.param) == (400, "continuation") and len(error.message) < 200
        return
    assert marker and marker.isascii() and marker.isprintable()


@PROPERTY
@given(marker=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=360))
def test_every_token_given_out_reads_back_as_its_marker(marker: str) -> None:
    assert decode_continuation(encode_continuation(marker)) == marker


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"day": "2026-11-25\n"}, "day"),
        ({"day": "\uff12\uff10\uff12\uff16-11-25"}, "day"),  # full-width digits are digits to \d
        ({"deployment": "gpt-image-1\n"}, "deployment"),
        ({"per_page": "5\n"}, "per_page"),
        ({"continuation": HOSTILE_TOKENS[0]}, "continuation"),
    ],
)
def test_a_trailing_newline_or_another_scripts_digits_are_refused(params: dict[str, str], param: str) -> None:
    with pytest.raises(ServiceError) as caught:
        GalleryQuery.parse(params, TODAY)
    assert (caught.value.status, caught.value.param) == (400, param)


@pytest.mark.parametrize("token", HOSTILE_TOKENS[:3])
async def test_the_index_answers_a_hostile_token_with_a_400(in_process: InProcess, sim: SimControl, token: str) -> None:
    client = await in_process()
    response = await client.get("/gallery", params={"continuation": token})
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["param"] == "continuation"
