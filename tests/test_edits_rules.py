"""The edit rules, pure: image facts from the bytes' headers, and each family's edit rules from its row."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.api.edits_schema import edit_bodies
from shared.errors import ServiceError
from shared.models.edits import (
    NOT_OFFERED,
    EditRequest,
    accepted_fields,
    check_inputs,
    edit_record_fields,
    edit_rules,
    form_values,
    parse_edit,
)
from shared.models.families import TABLE
from shared.models.image_bytes import MAX_FILL, MAX_STEPS, sniff
from shared.models.parsing import parse_request

EDITING = [row for row in TABLE if row.edits is not None]


def encoded(mode: str, fmt: str, size: tuple[int, int] = (123, 45), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encoded("RGB", "PNG"), ("png", 123, 45, False)),
        (encoded("RGBA", "PNG"), ("png", 123, 45, True)),
        (encoded("LA", "PNG"), ("png", 123, 45, True)),
        (encoded("P", "PNG", transparency=0), ("png", 123, 45, True)),  # alpha from a tRNS chunk
        (encoded("L", "PNG"), ("png", 123, 45, False)),
        (encoded("RGB", "JPEG"), ("jpeg", 123, 45, False)),
        (encoded("RGB", "JPEG", progressive=True), ("jpeg", 123, 45, False)),
        (encoded("RGB", "WEBP"), ("webp", 123, 45, False)),
        (encoded("RGB", "WEBP", lossless=True), ("webp", 123, 45, False)),
        (encoded("RGBA", "WEBP", lossless=True), ("webp", 123, 45, True)),
        (encoded("RGBA", "WEBP"), ("webp", 123, 45, True)),
    ],
)
def test_image_facts_come_from_the_headers(data: bytes, expected: tuple[str, int, int, bool]) -> None:
    facts = sniff(data)
    assert facts is not None and (facts.format, facts.width, facts.height, facts.has_alpha) == expected


@pytest.mark.parametrize("data", [b"", b"GIF89a" + bytes(40), encoded("RGB", "PNG")[:20], encoded("RGB", "JPEG")[:30], b"RIFF\x00\x00\x00\x00WEBPVP8 "])
def test_what_is_not_a_readable_image_has_no_facts(data: bytes) -> None:
    assert sniff(data) is None


def _with_segments(jpeg: bytes, count: int, fill: int = 0) -> bytes:
    """The JPEG with ``count`` empty APP1 segments (and ``fill`` fill bytes before each) ahead of its own."""
    return jpeg[:2] + (b"\xff" * fill + b"\xff\xe1\x00\x02") * count + jpeg[2:]


def test_a_header_walk_is_bounded_whatever_the_file_holds() -> None:
    jpeg, grey = encoded("RGB", "JPEG"), encoded("L", "PNG")  # a grey PNG: its alpha is a tRNS chunk's to say
    # What real encoders write (a few segments, a few fill bytes) is read...
    assert sniff(_with_segments(jpeg, 40, fill=3)) == sniff(jpeg)
    # ...what only a hostile file holds is not, however large: no walk over millions of steps.
    assert sniff(b"\xff\xd8\xff" + b"\xff" * 40_000_000) is None
    assert sniff(_with_segments(jpeg, MAX_STEPS + 1)) is None
    assert sniff(_with_segments(jpeg, 1, fill=MAX_FILL + 1)) is None
    chunk = b"\x00\x00\x00\x00teXt\x00\x00\x00\x00"  # an empty ancillary chunk (its CRC is not checked)
    assert sniff(grey[:33] + chunk * 3_000_000 + grey[33:]) is None
    assert sniff(grey[:33] + chunk * 50 + grey[33:]) == sniff(grey)
    assert sniff(grey[:33] + chunk * (MAX_STEPS + 1) + grey[33:]) is None


@pytest.mark.parametrize("row", EDITING, ids=lambda row: row.name)
def test_input_fidelity_exactly_where_the_row_has_it(row: object) -> None:
    family = row.name  # type: ignore[attr-defined]
    has_it = bool(row.edits.input_fidelities)  # type: ignore[attr-defined]
    try:
        edit = parse_edit({"prompt": "x", "input_fidelity": "high"}, ["inputs/a.png"], None, family, family)
    except ServiceError as error:
        assert not has_it and (error.param, error.code) == ("input_fidelity", "unknown_parameter")
    else:
        assert has_it and edit.upstream_body["input_fidelity"] == "high"


def test_families_that_edit_follow_azure() -> None:
    assert {row.name for row in EDITING} == {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2"}
    assert {row.name for row in EDITING if row.edits and row.edits.input_fidelities} == {"gpt-image-1", "gpt-image-1.5"}
    assert all(row.edits and row.edits.max_images == 16 and row.edits.input_formats == ("png", "jpeg") for row in EDITING)
    with pytest.raises(ServiceError) as caught:
        edit_rules("dall-e-3", "model")
    assert (caught.value.status, caught.value.code, caught.value.param) == (400, "OperationNotSupported", "model")


def test_shared_fields_are_checked_and_translated_as_for_generations() -> None:
    edit = parse_edit(form_values({"prompt": "x", "n": "2", "size": "1792x1024", "quality": "hd"}), ["inputs/a.png"], None, "gpt-image-1", "gpt-image-1")
    generation = parse_request({"prompt": "x", "n": 2, "size": "1792x1024", "quality": "hd"}, "gpt-image-1", "gpt-image-1")
    assert edit.upstream_body == generation.upstream_body and edit.translations == generation.translations
    assert edit.asked["image"] == ["inputs/a.png"] and isinstance(edit, EditRequest)
    assert edit_record_fields(edit) == {"operation": "edit", "inputs": {"image": ["inputs/a.png"], "mask": None}}
    assert edit_record_fields(generation) == {}


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"prompt": "x", "stream": True, "partial_images": 5}, "partial_images", "invalid_value"),
        ({"prompt": "x", "partial_images": 2}, "partial_images", "invalid_value"),  # needs stream
        ({"prompt": "x", "moderation": "low"}, "moderation", "unknown_parameter"),
        ({"prompt": "x", "model": "other"}, "model", "invalid_value"),
    ],
)
def test_edit_only_refusals(fields: dict[str, object], param: str, code: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse_edit(fields, ["inputs/a.png"], None, "gpt-image-2", "gpt-image-2")
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)


def test_a_streamed_edit_sends_stream_and_partial_images() -> None:
    edit = parse_edit({"prompt": "x", "stream": True, "partial_images": 2}, ["inputs/a.png"], None, "gpt-image-2", "gpt-image-2")
    assert (edit.stream, edit.partial_images) == (True, 2)
    assert edit.upstream_body == {"prompt": "x", "stream": True, "partial_images": 2}


def test_stream_false_and_no_partial_images_are_accepted_and_not_sent() -> None:
    edit = parse_edit({"prompt": "x", "stream": False, "partial_images": 0}, ["inputs/a.png"], None, "gpt-image-2", "gpt-image-2")
    assert edit.upstream_body == {"prompt": "x"}


def test_webp_only_when_upstream_is_openai() -> None:
    rules = edit_rules("gpt-image-1")
    webp = encoded("RGB", "WEBP")
    assert check_inputs(rules, [("image", webp)], None, openai=True)[0][0].format == "webp"
    with pytest.raises(ServiceError) as caught:
        check_inputs(rules, [("image", webp)], None)
    assert caught.value.param == "image" and "PNG or JPEG" in caught.value.message


def test_the_mask_is_checked_against_the_first_image() -> None:
    rules = edit_rules("gpt-image-1")
    first, second = encoded("RGB", "JPEG", (64, 64)), encoded("RGB", "PNG", (32, 32))
    facts, mask = check_inputs(rules, [("image[]", first), ("image[]", second)], encoded("RGBA", "PNG", (64, 64)))
    assert [f.width for f in facts] == [64, 32] and mask is not None and mask.has_alpha
    with pytest.raises(ServiceError) as caught:
        check_inputs(rules, [("image[]", second), ("image[]", first)], encoded("RGBA", "PNG", (64, 64)))
    assert caught.value.param == "mask" and "32x32" in caught.value.message


def test_the_published_schema_lists_every_edit_field() -> None:
    fields = set().union(*(row.edits.fields for row in EDITING if row.edits))
    bodies = edit_bodies()
    assert set(bodies["multipart/form-data"]["schema"]["properties"]) == fields | {"image[]"}
    assert set(bodies["application/json"]["schema"]["properties"]) == fields
    assert bodies["multipart/form-data"]["schema"]["properties"]["input_fidelity"]["enum"] == ["high", "low"]


@pytest.mark.parametrize("family", ["gpt-image-1-mini", "gpt-image-2"])
def test_a_refusal_lists_only_what_the_service_accepts(family: str) -> None:
    with pytest.raises(ServiceError) as caught:
        parse_edit({"prompt": "x", "input_fidelity": "high"}, ["inputs/a.png"], None, family, family)
    listed = caught.value.message.split("accept: ", 1)[1].rstrip(".").split(", ")
    assert listed == accepted_fields(edit_rules(family)) and "prompt" in listed and "mask" in listed
    assert "stream" in listed and "partial_images" in listed  # offered since streaming arrived
    # Derived from the rules: once a parameter is offered, the same refusal lists it.
    assert set(accepted_fields(edit_rules(family))) == set(edit_rules(family).fields) - set(NOT_OFFERED)
