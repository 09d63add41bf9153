"""The multipart/form-data reader under hostile input: every body is a form or a 400/413, early and cheaply.

Property tests drive :class:`~shared.api.multipart.FormParser` with what hypothesis makes up
(bodies built from a form and cut at random places, and bytes nobody would send); the HTTP
tests send the bodies that broke it (a boundary longer than RFC 2046 allows, a flood of
text fields, a flood of padding) to all four edit routes in process, and count what was
read before the refusal instead of timing it.
"""

from __future__ import annotations

import itertools
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.api.multipart import BOUNDARY, SLICE_BYTES, FormParser, Limits, boundary_of
from shared.echo import ECHO_LIMIT
from shared.errors import ServiceError
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
FILES = ("image", "image[]", "mask")
LIMITS = Limits(total_bytes=1 << 20, file_bytes=4096, field_bytes=2048, max_files=4, file_fields=FILES, max_fields=8)
EDIT_ROUTES = [
    "/openai/deployments/gpt-image-1/images/edits?api-version=2025-04-01-preview",
    "/openai/deployments/gpt-image-1/images/edits:submit?api-version=2025-04-01-preview",
    "/openai/v1/images/edits",
    "/openai/v1/images/edits:submit",
]

_BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
BOUNDARIES = st.builds(lambda body, last: body + last, st.text(_BCHARS + " ", max_size=69), st.sampled_from(_BCHARS))
NAMES = st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), min_size=1, max_size=20).filter(lambda n: n not in FILES)
TEXTS = st.text(st.characters(codec="utf-8"), max_size=200)


def encode(boundary: str, fields: dict[str, str], files: list[tuple[str, bytes]]) -> bytes:
    """The form as a client writes it."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v.encode() + b"\r\n" for k, v in fields.items()]
    for index, (name, data) in enumerate(files):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f{index}.png"\r\n\r\n'.encode() + data + b"\r\n")
    return b"".join([*parts, f"--{boundary}--\r\n".encode()])


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` in pieces, cut at ``points`` (positions taken modulo its length)."""
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks)]


def parse(boundary: bytes, pieces: list[bytes], limits: Limits = LIMITS) -> Any:
    parser = FormParser(boundary, limits)
    for piece in pieces:
        parser.write(piece)
    return parser.finish()


def assert_answerable(error: ServiceError) -> None:
    assert error.status in (400, 413), error
    assert len(error.message) < 600 and (error.param is None or len(error.param) <= ECHO_LIMIT + 1)


# --- properties ---------------------------------------------------------------------------------------------


@PROPERTY
@given(
    boundary=BOUNDARIES,
    fields=st.dictionaries(NAMES, TEXTS, max_size=6),
    files=st.lists(st.tuples(st.sampled_from(FILES), st.binary(max_size=600)), max_size=4),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
def test_a_form_within_the_limits_reads_back_as_sent_however_it_is_cut(boundary: str, fields: dict[str, str], files: list[tuple[str, bytes]], points: list[int]) -> None:
    data = encode(boundary, fields, files)
    form = parse(boundary.encode(), cut(data, points))
    assert form.fields == fields
    assert [(name, b"".join(chunks)) for name, chunks in form.files] == files


@PROPERTY
@given(
    boundary=BOUNDARIES,
    fields=st.dictionaries(NAMES, st.text(max_size=900), max_size=14),
    files=st.lists(st.tuples(st.sampled_from([*FILES, "other"]), st.binary(max_size=5000)), max_size=6),
    damage=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=8)), max_size=3),
    points=st.lists(st.integers(min_value=0), max_size=8),
)
def test_any_body_is_a_form_within_the_limits_or_a_400_or_413(
    boundary: str, fields: dict[str, str], files: list[tuple[str, bytes]], damage: list[tuple[int, bytes]], points: list[int]
) -> None:
    data = encode(boundary, fields, files)
    for at, junk in damage:  # a few bytes overwritten anywhere: headers, boundaries, data
        at %= len(data) + 1
        data = data[:at] + junk + data[at + len(junk) :]
    try:
        form = parse(boundary.encode(), cut(data, points))
    except ServiceError as error:
        assert_answerable(error)
        return
    assert len(form.fields) <= LIMITS.max_fields and len(form.files) <= LIMITS.max_files
    assert sum(len(v.encode()) for v in form.fields.values()) <= LIMITS.field_bytes
    assert all(sum(map(len, chunks)) <= LIMITS.file_bytes and name in FILES for name, chunks in form.files)


@PROPERTY
@given(data=st.binary(max_size=2000), boundary=BOUNDARIES)
def test_bytes_nobody_would_send_are_a_400(data: bytes, boundary: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse(boundary.encode(), [data])
    assert_answerable(caught.value)


@PROPERTY
@given(value=st.text(max_size=120))
def test_a_boundary_is_what_rfc_2046_allows_or_a_400_naming_the_body(value: str) -> None:
    content_type = f'multipart/form-data; boundary="{value}"'
    try:
        found = boundary_of(content_type)
    except ServiceError as error:
        assert (error.status, error.code, error.param) == (400, "invalid_multipart", None)
        assert "body" in error.message and len(error.message) < 400
        return
    assert BOUNDARY.fullmatch(found.decode()) and 1 <= len(found) <= 70


def test_the_limits_of_rfc_2046_themselves() -> None:
    assert boundary_of("multipart/form-data; boundary=" + "a" * 70) == b"a" * 70
    for bad in ("a" * 71, "a" * 300, "ends with space ", "semi;colon", "new\nline", "qu\"ote"):
        with pytest.raises(ServiceError) as caught:
            boundary_of(f'multipart/form-data; boundary="{bad}"')
        assert caught.value.status == 400 and caught.value.param is None


def test_padding_after_a_boundary_is_refused_within_two_slices() -> None:
    head = encode("b", {"prompt": "x"}, [])[: -len(b"--b--\r\n")] + b"--b"  # ...\r\n--b, then padding
    parser = FormParser(b"b", LIMITS)
    parser.write(head)
    fed = 0
    with pytest.raises(ServiceError) as caught:
        for _ in range(100):
            parser.write(b" " * SLICE_BYTES)
            fed += 1
    assert fed <= 2 and "padding" in caught.value.message
    # A little padding is RFC 2046's, and is read.
    body = head + b" \t \r\n" + encode("b", {"n": "2"}, [])[len(b"--b\r\n") :]
    assert parse(b"b", [body]).fields == {"prompt": "x", "n": "2"}


# --- over HTTP, on every edit route ----------------------------------------------------------------------


@pytest.mark.parametrize("route", EDIT_ROUTES)
@pytest.mark.parametrize("boundary", ["x" * 71, "x" * 257, "x" * 5000, "bad boundary "])
async def test_a_boundary_rfc_2046_does_not_allow_is_a_400_on_every_edit_route(in_process: InProcess, sim: SimControl, route: str, boundary: str) -> None:
    client = await in_process(IMAGES_QUEUE=f"mp-{uuid.uuid4().hex[:12]}")
    body = encode(boundary, {"prompt": "x", "model": "gpt-image-1"}, [("image", b"\x89PNG")])
    response = await client.post(route, content=body, headers={"content-type": f'multipart/form-data; boundary="{boundary}"'})
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_multipart" and "param" not in error and "body" in error["message"]
    assert len(error["message"]) < 400
    assert sim.stats()["requests"] == 0


async def _flood(sent: list[int], part: Callable[[int], bytes], parts: int) -> AsyncIterator[bytes]:
    for index in range(parts):
        sent.append(index)
        yield part(index)


@pytest.mark.parametrize("route", EDIT_ROUTES)
async def test_a_flood_of_text_fields_is_refused_after_a_few_of_them(in_process: InProcess, sim: SimControl, route: str) -> None:
    client = await in_process(IMAGES_QUEUE=f"mp-{uuid.uuid4().hex[:12]}")
    sent: list[int] = []
    part = lambda i: f'--f\r\nContent-Disposition: form-data; name="field{i}"\r\n\r\nv\r\n'.encode()  # noqa: E731
    response = await client.post(route, content=_flood(sent, part, 1_400_000), headers={"content-type": "multipart/form-data; boundary=f"})
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "too_many_fields" and "param" not in error and "body" in error["message"]
    assert len(sent) < 200  # refused after the 65th field, not after 1.4 million
    assert sim.stats()["requests"] == 0


async def test_text_fields_together_are_bounded_like_a_json_body(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process(IMAGES_MAX_BODY_BYTES="4096")
    sent: list[int] = []
    part = lambda i: f'--f\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode() + b"v" * 1000 + b"\r\n"  # noqa: E731
    response = await client.post(EDIT_ROUTES[0], content=_flood(sent, part, 60), headers={"content-type": "multipart/form-data; boundary=f"})
    assert response.status_code == 413, response.text[:300]
    assert "text fields together" in response.json()["error"]["message"] and len(sent) <= 6
    assert sim.stats()["requests"] == 0


async def test_unknown_names_are_echoed_capped(in_process: InProcess, sim: SimControl) -> None:
    client = await in_process()
    long = "n" * 4000  # a part's headers hold at most about 4 KB
    answers = []
    for fields, files in (({"prompt": "x", long: "1"}, [("image", b"\x89PNG")]), ({"prompt": "x"}, [(long, b"\x89PNG")])):
        parts = [f'--f\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
        parts += [f'--f\r\nContent-Disposition: form-data; name="{k}"; filename="a.png"\r\n\r\n' for k, _ in files]
        body = "".join(parts).encode() + b"\x89PNG\r\n--f--\r\n"
        answers.append(await client.post(EDIT_ROUTES[0], content=body, headers={"content-type": "multipart/form-data; boundary=f"}))
    # JSON naming archived images: the name as long as a body may be.
    answers.append(await client.post(EDIT_ROUTES[0], json={"prompt": "x", "image": "inputs/" + "0" * 64 + ".png", "n" * 200_000: 1}))
    for response in answers:
        assert response.status_code == 400, response.text[:300]
        error = response.json()["error"]
        assert error["code"] == "unknown_parameter" and len(response.content) < 1000, response.text[:300]
        assert len(error["param"]) <= ECHO_LIMIT + 1 and "characters)" in error["message"]
    assert sim.stats()["requests"] == 0
