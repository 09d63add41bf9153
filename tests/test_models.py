"""Request parsing, validation and translation: every rule of the model-rules table.

Each refusal is checked for status 400, its code and the parameter it names; each
success for the exact upstream body, what the caller gets back and what was translated.
"""

from __future__ import annotations

import copy
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ServiceError
from shared.models import (
    BY_NAME,
    DALL_E_3,
    FAMILIES,
    GPT_IMAGE_1,
    GPT_IMAGE_1_5,
    GPT_IMAGE_1_MINI,
    GPT_IMAGE_2,
    GPT_IMAGE_2_5_FLARE,
    GPT_IMAGE_2_5_SUNBURST,
    GPT_IMAGE_FAMILIES,
    IAC_DEFAULT_MODEL,
    KNOWN_FIELDS,
    PROMPT_LIMITS,
    TABLE,
    ImageRequest,
    family_for_name,
    iac_versions,
    lifecycle_state,
    lifecycle_view,
    parse_request,
    retired_warnings,
    rules_of,
)

DEPLOYMENT = "images-prod"
PROMPT = "A multi-colored umbrella on the beach, disposable camera"
GPT_IMAGE_1_LIKE = (GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5)
ALL_FAMILIES = sorted(FAMILIES)
GPT_FAMILIES = sorted(GPT_IMAGE_FAMILIES)


def parse(body: object, family: str = GPT_IMAGE_1, *, deployment: str = DEPLOYMENT, api_style_v1: bool = False) -> ImageRequest:
    return parse_request(body, deployment, family, api_style_v1=api_style_v1)


def refused(
    body: object, family: str, code: str, param: str | None, *, deployment: str = DEPLOYMENT, api_style_v1: bool = False
) -> ServiceError:
    """Parse, expect a 400 invalid_request_error with ``code`` naming ``param``, return it for more checks."""
    with pytest.raises(ServiceError) as caught:
        parse_request(body, deployment, family, api_style_v1=api_style_v1)
    error = caught.value
    assert (error.status, error.code, error.param) == (400, code, param), repr(error)
    assert error.body() == {
        "error": {
            "code": code,
            "message": error.message,
            **({"param": param} if param is not None else {}),
            "type": "invalid_request_error",
        }
    }
    assert error.message.strip()
    return error


def with_prompt(**fields: Any) -> dict[str, Any]:
    return {"prompt": PROMPT, **fields}


# --- the public constants -------------------------------------------------------------------------


def test_known_fields_are_every_accepted_name() -> None:
    assert KNOWN_FIELDS == {
        "prompt", "size", "n", "quality", "style", "response_format", "output_format",
        "output_compression", "background", "user", "model", "moderation", "stream", "partial_images",
    }  # fmt: skip


def test_prompt_limits_cover_every_family() -> None:
    assert dict(PROMPT_LIMITS) == {
        DALL_E_3: 4000,
        GPT_IMAGE_1: 32000,
        GPT_IMAGE_1_MINI: 32000,
        GPT_IMAGE_1_5: 32000,
        GPT_IMAGE_2: 32000,
    }


def test_unknown_family_is_a_configuration_bug_not_a_caller_error() -> None:
    with pytest.raises(ValueError, match="dall-e-2"):
        parse({"prompt": PROMPT}, "dall-e-2")


# --- the body -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], [{"prompt": PROMPT}], PROMPT, 1, 1.5, True])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_body_that_is_not_an_object_is_refused(body: object, family: str) -> None:
    error = refused(body, family, "invalid_type", None)
    assert "JSON object" in error.message


def test_body_is_not_changed_by_parsing() -> None:
    body = with_prompt(quality="hd", style="vivid", response_format="url", size="1792x1024", user=None)
    before = copy.deepcopy(body)
    parse(body, GPT_IMAGE_1)
    assert body == before


# --- prompt ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("body", [{}, {"prompt": None}, {"size": "1024x1024"}])
def test_missing_prompt_is_refused(body: dict[str, Any], family: str) -> None:
    refused(body, family, "missing_required_parameter", "prompt")


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("prompt", [1, 1.5, True, ["a cat"], {"text": "a cat"}])
def test_prompt_of_wrong_type_is_refused(prompt: object, family: str) -> None:
    error = refused({"prompt": prompt}, family, "invalid_type", "prompt")
    assert "string" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("prompt", ["", " ", "\n\t ", "\u3000", "\u00a0"])
def test_empty_or_blank_prompt_is_refused(prompt: str, family: str) -> None:
    refused({"prompt": prompt}, family, "invalid_value", "prompt")


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("char", ["a", "é", "猫", "😀"])
def test_prompt_exactly_at_the_limit_is_accepted_counting_characters_not_bytes(family: str, char: str) -> None:
    prompt = char * PROMPT_LIMITS[family]
    assert parse({"prompt": prompt}, family).upstream_body["prompt"] == prompt


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("char", ["a", "😀"])
def test_prompt_one_character_over_the_limit_is_refused(family: str, char: str) -> None:
    limit = PROMPT_LIMITS[family]
    error = refused({"prompt": char * (limit + 1)}, family, "string_above_max_length", "prompt")
    assert str(limit) in error.message and str(limit + 1) in error.message


def test_one_character_prompt_is_accepted_and_sent_as_given() -> None:
    assert parse({"prompt": " x "}, GPT_IMAGE_2).upstream_body == {"prompt": " x "}


def test_dall_e_3_limit_is_4000_even_when_gpt_image_would_take_it() -> None:
    refused({"prompt": "a" * 4001}, DALL_E_3, "string_above_max_length", "prompt")
    assert parse({"prompt": "a" * 4001}, GPT_IMAGE_1).upstream_body["prompt"] == "a" * 4001


# --- unknown and family-inappropriate fields -----------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("name", ["foo", "Prompt", "image", "seed", "deployment", "id", ""])
def test_unknown_field_is_refused_and_named(name: str, family: str) -> None:
    error = refused(with_prompt(**{name: "x"}), family, "unknown_parameter", name)
    assert "prompt" in error.message  # the accepted names are listed


# --- streaming: a rule of the family (Rules.partial_images) ----------------------------------------


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("partial_images", [None, 0, 1, 3])
def test_a_family_that_streams_takes_stream_and_partial_images_and_sends_them(family: str, partial_images: int | None) -> None:
    body = with_prompt(stream=True, **({} if partial_images is None else {"partial_images": partial_images}))
    request = parse(body, family)
    assert (request.stream, request.partial_images, request.n) == (True, partial_images or 0, 1)
    assert request.upstream_body == {"prompt": PROMPT, "stream": True, **({} if partial_images is None else {"partial_images": partial_images})}


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"stream": True, "partial_images": 4}, "partial_images", "invalid_value"),
        ({"stream": True, "partial_images": -1}, "partial_images", "invalid_value"),
        ({"stream": True, "partial_images": "2"}, "partial_images", "invalid_type"),
        ({"partial_images": 2}, "partial_images", "invalid_value"),  # without stream
        ({"stream": "true"}, "stream", "invalid_type"),
        ({"stream": True, "n": 2}, "n", "invalid_value"),
    ],
)
def test_stream_refusals_name_the_parameter(fields: dict[str, Any], param: str, code: str) -> None:
    refused(with_prompt(**fields), GPT_IMAGE_2, code, param)


def test_stream_on_a_family_that_does_not_stream_is_refused_naming_stream() -> None:
    error = refused(with_prompt(stream=True), DALL_E_3, "unsupported_value", "stream")
    assert "dall-e-3 does not stream" in error.message and GPT_IMAGE_2 in error.message
    refused(with_prompt(partial_images=1), DALL_E_3, "unknown_parameter", "partial_images")


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_stream_false_is_a_plain_request_for_every_family(family: str) -> None:
    request = parse(with_prompt(stream=False), family)
    assert not request.stream and "stream" not in request.upstream_body


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_unknown_field_is_refused_even_when_null(family: str) -> None:
    refused(with_prompt(foo=None), family, "unknown_parameter", "foo")


def test_unknown_field_is_reported_before_a_missing_prompt() -> None:
    refused({"foo": 1}, GPT_IMAGE_1, "unknown_parameter", "foo")


def test_huge_unknown_field_name_is_shortened_in_the_message_and_the_param() -> None:
    name = "x" * 10_000
    # param names the parameter as far as an echo may go: its first 100 characters, then an ellipsis.
    error = refused(with_prompt(**{name: 1}), GPT_IMAGE_1, "unknown_parameter", "x" * 100 + "…")
    assert len(error.message) < 400
    assert "(10,000 characters)" in error.message


@pytest.mark.parametrize(
    ("name", "value"),
    [("output_format", "png"), ("output_compression", 50), ("background", "auto"), ("moderation", "low")],
)
def test_gpt_image_fields_sent_to_dall_e_3_are_refused(name: str, value: object) -> None:
    error = refused(with_prompt(**{name: value}), DALL_E_3, "unknown_parameter", name)
    assert DALL_E_3 in error.message and "gpt-image" in error.message


# --- size -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["1024x1024", "1792x1024", "1024x1792"])
def test_dall_e_3_sizes_are_sent_as_given(size: str) -> None:
    request = parse(with_prompt(size=size), DALL_E_3)
    assert request.upstream_body == {"prompt": PROMPT, "size": size, "response_format": "b64_json"}
    assert request.translations == []


@pytest.mark.parametrize(
    "size", ["auto", "1536x1024", "1024x1536", "512x512", "256x256", "1024X1024", " 1024x1024", "1024x1024 "]
)
def test_other_sizes_are_refused_by_dall_e_3(size: str) -> None:
    error = refused(with_prompt(size=size), DALL_E_3, "invalid_value", "size")
    assert repr(size) in error.message and "'1792x1024'" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("size", [1024, 1024.0, True, ["1024x1024"], {"w": 1024}])
def test_size_of_wrong_type_is_refused(size: object, family: str) -> None:
    refused(with_prompt(size=size), family, "invalid_type", "size")


@pytest.mark.parametrize("family", GPT_IMAGE_1_LIKE)
@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536", "auto"])
def test_gpt_image_1_sizes_are_sent_as_given(size: str, family: str) -> None:
    request = parse(with_prompt(size=size), family)
    assert request.upstream_body == {"prompt": PROMPT, "size": size}
    assert request.translations == []


@pytest.mark.parametrize("family", GPT_IMAGE_1_LIKE)
@pytest.mark.parametrize(("seed_size", "sent"), [("1792x1024", "1536x1024"), ("1024x1792", "1024x1536")])
def test_seed_sizes_are_translated_to_the_nearest_gpt_image_1_size(seed_size: str, sent: str, family: str) -> None:
    request = parse(with_prompt(size=seed_size), family)
    assert request.upstream_body == {"prompt": PROMPT, "size": sent}
    assert request.translations == [
        f"size: {seed_size!r} -> {sent!r} ({family} has no {seed_size}; nearest size, same orientation)"
    ]
    assert request.asked["size"] == seed_size


@pytest.mark.parametrize("family", GPT_IMAGE_1_LIKE)
@pytest.mark.parametrize("size", ["512x512", "2048x2048", "1536x1536", "AUTO", "Auto", "1024x1024\n", ""])
def test_other_sizes_are_refused_by_gpt_image_1(size: str, family: str) -> None:
    error = refused(with_prompt(size=size), family, "invalid_value", "size")
    assert "'1536x1024'" in error.message and "'auto'" in error.message


@pytest.mark.parametrize(
    "size",
    [
        "auto",
        "1024x1024",
        "1536x1024",
        "1024x1536",
        "1792x1024",  # the seed's sizes fit gpt-image-2's rule as they are
        "1024x1792",
        "3824x1280",  # long edge just under 3840
        "1280x3824",
        "3072x1024",  # ratio exactly 3:1
        "1024x3072",
        "2400x800",  # 3:1 again, smaller
        "1024x640",  # exactly 655,360 px, the floor
        "640x1024",
        "2880x2880",  # exactly 8,294,400 px, the ceiling, with both edges under 3840
        "3824x2160",  # the widest landscape under the ceiling
        "2160x3824",
        "3824x1376",
    ],
)
def test_gpt_image_2_sizes_inside_the_rule_are_sent_as_given(size: str) -> None:
    request = parse(with_prompt(size=size), GPT_IMAGE_2)
    assert request.upstream_body == {"prompt": PROMPT, "size": size}
    assert request.translations == []


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("3840x1280", "less than 3840"),  # long edge must be strictly below 3840 even at a valid ratio and area
        ("1280x3840", "less than 3840"),
        ("3840x2160", "less than 3840"),  # 8,294,400 px exactly, but the edge is out
        ("4096x2048", "less than 3840"),
        ("2048x512", "3:1"),  # 4:1
        ("512x2048", "3:1"),
        ("3072x1008", "3:1"),  # just over 3:1
        ("1008x640", "655,360"),  # 645,120 px, under the floor
        ("800x800", "655,360"),
        ("1024x624", "655,360"),
        ("2896x2880", "8,294,400"),  # 8,340,480 px, over the ceiling
        ("3824x2176", "8,294,400"),
        ("1000x1000", "multiples of 16"),
        ("1024x1000", "multiples of 16"),
        ("1025x1024", "multiples of 16"),
        ("1032x1024", "multiples of 16"),  # multiple of 8, not of 16
    ],
)
def test_gpt_image_2_sizes_outside_the_rule_are_refused_saying_why(size: str, why: str) -> None:
    error = refused(with_prompt(size=size), GPT_IMAGE_2, "invalid_value", "size")
    assert why in error.message and size in error.message


@pytest.mark.parametrize(
    "size",
    [
        "1024",
        "1024x",
        "x1024",
        "1024*1024",
        "1024 x 1024",
        "1024x1024\n",
        " 1024x1024",
        "1024X1024",
        "-1024x1024",
        "1024.0x1024",
        "1024x1024x1",
        "\uff11\uff10\uff12\uff14x1024",  # fullwidth digits: \d would take them
        "\u0661\u0660\u0662\u0664x\u0661\u0660\u0662\u0664",  # Arabic-Indic digits
        "0x1024",
        "1024x0",
        "01024x1024",
        "AUTO",
        "",
    ],
)
def test_gpt_image_2_malformed_sizes_are_refused(size: str) -> None:
    refused(with_prompt(size=size), GPT_IMAGE_2, "invalid_value", "size")


@pytest.mark.parametrize("size", ["99999x1024", "99999999999x1024", "1024x" + "9" * 5000])
def test_gpt_image_2_absurdly_large_sizes_are_refused_without_trouble(size: str) -> None:
    error = refused(with_prompt(size=size), GPT_IMAGE_2, "invalid_value", "size")
    assert "3840" in error.message and len(error.message) < 500


# --- n --------------------------------------------------------------------------------------------


def test_dall_e_3_takes_n_1_and_sends_it() -> None:
    request = parse(with_prompt(n=1), DALL_E_3)
    assert request.upstream_body == {"prompt": PROMPT, "n": 1, "response_format": "b64_json"}
    assert request.n == 1


@pytest.mark.parametrize("n", [0, 2, 10, -1])
def test_dall_e_3_refuses_any_other_n(n: int) -> None:
    error = refused(with_prompt(n=n), DALL_E_3, "invalid_value", "n")
    assert str(n) in error.message and "must be 1" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("n", [1, 2, 9, 10])
def test_gpt_image_takes_n_from_1_to_10(n: int, family: str) -> None:
    request = parse(with_prompt(n=n), family)
    assert request.upstream_body == {"prompt": PROMPT, "n": n}
    assert request.n == n


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("n", [0, 11, -1, 10**30])
def test_gpt_image_refuses_n_out_of_range(n: int, family: str) -> None:
    error = refused(with_prompt(n=n), family, "invalid_value", "n")
    assert "between 1 and 10" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("n", [True, False, 1.0, 2.0, 1.5, "1", "2", [1], {"n": 1}])
def test_n_must_be_a_json_integer_not_bool_float_or_string(n: object, family: str) -> None:
    error = refused(with_prompt(n=n), family, "invalid_type", "n")
    assert "integer" in error.message


def test_n_defaults_to_1_and_is_not_sent() -> None:
    request = parse(with_prompt(), GPT_IMAGE_2)
    assert request.n == 1 and "n" not in request.upstream_body


# --- quality --------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", ["standard", "hd"])
def test_dall_e_3_qualities_are_sent_as_given(quality: str) -> None:
    request = parse(with_prompt(quality=quality), DALL_E_3)
    assert request.upstream_body == {"prompt": PROMPT, "quality": quality, "response_format": "b64_json"}
    assert request.translations == []


@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto", "HD", ""])
def test_dall_e_3_refuses_other_qualities(quality: str) -> None:
    error = refused(with_prompt(quality=quality), DALL_E_3, "invalid_value", "quality")
    assert "'standard'" in error.message and "'hd'" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_gpt_image_qualities_are_sent_as_given(quality: str, family: str) -> None:
    request = parse(with_prompt(quality=quality), family)
    assert request.upstream_body == {"prompt": PROMPT, "quality": quality}
    assert request.translations == []


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize(("seed", "sent"), [("hd", "high"), ("standard", "medium")])
def test_seed_qualities_are_translated_for_gpt_image(seed: str, sent: str, family: str) -> None:
    request = parse(with_prompt(quality=seed), family)
    assert request.upstream_body == {"prompt": PROMPT, "quality": sent}
    assert request.translations == [f"quality: {seed!r} -> {sent!r}"]
    assert request.asked == {"prompt": PROMPT, "quality": seed}


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("quality", ["ultra", "HD", "High", "xhigh", ""])
def test_gpt_image_refuses_unknown_qualities(quality: str, family: str) -> None:
    error = refused(with_prompt(quality=quality), family, "invalid_value", "quality")
    assert "'low'" in error.message and "'hd'" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("quality", [1, True, ["hd"]])
def test_quality_of_wrong_type_is_refused(quality: object, family: str) -> None:
    refused(with_prompt(quality=quality), family, "invalid_type", "quality")


# --- style ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["vivid", "natural"])
def test_dall_e_3_styles_are_sent_as_given(style: str) -> None:
    request = parse(with_prompt(style=style), DALL_E_3)
    assert request.upstream_body == {"prompt": PROMPT, "style": style, "response_format": "b64_json"}
    assert request.translations == []


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("style", ["vivid", "natural"])
def test_style_is_dropped_for_gpt_image_and_recorded(style: str, family: str) -> None:
    request = parse(with_prompt(style=style), family)
    assert request.upstream_body == {"prompt": PROMPT}
    assert request.translations == [f"style: {style!r} dropped ({family} has no style)"]
    assert request.asked == {"prompt": PROMPT, "style": style}


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("style", ["cinematic", "Vivid", ""])
def test_unknown_style_is_refused_for_every_family(style: str, family: str) -> None:
    error = refused(with_prompt(style=style), family, "invalid_value", "style")
    assert "'vivid'" in error.message and "'natural'" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_style_of_wrong_type_is_refused(family: str) -> None:
    refused(with_prompt(style=1), family, "invalid_type", "style")


# --- response_format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "returned", "translations"),
    [
        ({}, "url", []),
        (
            {"response_format": "url"},
            "url",
            [
                "response_format: 'url' kept by this service; upstream asked for 'b64_json' "
                "(the image is archived and linked, so there is no second download)"
            ],
        ),
        ({"response_format": "b64_json"}, "b64_json", []),
    ],
)
def test_dall_e_3_always_asks_upstream_for_base64(given: dict[str, Any], returned: str, translations: list[str]) -> None:
    request = parse(with_prompt(**given), DALL_E_3)
    assert request.upstream_body == {"prompt": PROMPT, "response_format": "b64_json"}
    assert request.response_format == returned
    assert request.translations == translations


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_gpt_image_keeps_response_format_for_the_caller_and_never_sends_it(response_format: str, family: str) -> None:
    request = parse(with_prompt(response_format=response_format), family)
    assert request.upstream_body == {"prompt": PROMPT}
    assert request.response_format == response_format
    assert request.translations == [
        f"response_format: {response_format!r} kept by this service, not sent upstream (gpt-image always returns base64)"
    ]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_response_format_defaults_to_a_link_for_every_family(family: str) -> None:
    request = parse(with_prompt(), family)
    assert request.response_format == "url"
    assert request.translations == []


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize(
    ("value", "code"), [("png", "invalid_value"), ("URL", "invalid_value"), ("base64", "invalid_value"), (1, "invalid_type")]
)
def test_bad_response_format_is_refused(value: object, code: str, family: str) -> None:
    refused(with_prompt(response_format=value), family, code, "response_format")


# --- output_format, output_compression, background, moderation ----------------------------------


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize(
    ("output_format", "content_type", "extension"), [("png", "image/png", "png"), ("jpeg", "image/jpeg", "jpg")]
)
def test_gpt_image_output_formats(output_format: str, content_type: str, extension: str, family: str) -> None:
    request = parse(with_prompt(output_format=output_format), family)
    assert request.upstream_body == {"prompt": PROMPT, "output_format": output_format}
    assert (request.output_format, request.content_type, request.extension) == (output_format, content_type, extension)


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_output_format_defaults_to_png_and_is_not_sent(family: str) -> None:
    request = parse(with_prompt(), family)
    assert request.output_format == "png" and "output_format" not in request.upstream_body


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("output_format", ["jpg", "webp", "gif", "PNG", "JPEG", ""])
def test_gpt_image_refuses_other_output_formats(output_format: str, family: str) -> None:
    error = refused(with_prompt(output_format=output_format), family, "invalid_value", "output_format")
    assert "'png'" in error.message and "'jpeg'" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("compression", [0, 1, 50, 99, 100])
def test_output_compression_with_jpeg(compression: int, family: str) -> None:
    request = parse(with_prompt(output_format="jpeg", output_compression=compression), family)
    assert request.upstream_body == {"prompt": PROMPT, "output_format": "jpeg", "output_compression": compression}


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("compression", [-1, 101, 1000])
def test_output_compression_out_of_range_is_refused(compression: int, family: str) -> None:
    error = refused(
        with_prompt(output_format="jpeg", output_compression=compression), family, "invalid_value", "output_compression"
    )
    assert "between 0 and 100" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("compression", [True, False, 50.0, 50.5, "50"])
def test_output_compression_must_be_an_integer(compression: object, family: str) -> None:
    refused(with_prompt(output_format="jpeg", output_compression=compression), family, "invalid_type", "output_compression")


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("given", [{}, {"output_format": "png"}])
def test_output_compression_without_jpeg_is_refused(given: dict[str, Any], family: str) -> None:
    error = refused(with_prompt(output_compression=80, **given), family, "invalid_value", "output_compression")
    assert "'jpeg'" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize(
    ("given", "output_format"),
    [
        ({"background": "auto"}, "png"),
        ({"background": "opaque"}, "png"),
        ({"background": "transparent"}, "png"),
        ({"background": "transparent", "output_format": "png"}, "png"),
        ({"background": "opaque", "output_format": "jpeg"}, "jpeg"),
        ({"background": "auto", "output_format": "jpeg"}, "jpeg"),
    ],
)
def test_backgrounds(given: dict[str, Any], output_format: str, family: str) -> None:
    request = parse(with_prompt(**given), family)
    assert request.upstream_body == {"prompt": PROMPT, **given}
    assert request.output_format == output_format


@pytest.mark.parametrize("family", GPT_FAMILIES)
def test_transparent_background_needs_png(family: str) -> None:
    error = refused(with_prompt(background="transparent", output_format="jpeg"), family, "invalid_value", "background")
    assert "'png'" in error.message


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize(
    ("value", "code"), [("none", "invalid_value"), ("Transparent", "invalid_value"), (False, "invalid_type")]
)
def test_bad_background_is_refused(value: object, code: str, family: str) -> None:
    refused(with_prompt(background=value), family, code, "background")


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize("moderation", ["auto", "low"])
def test_gpt_image_moderation_is_sent(moderation: str, family: str) -> None:
    assert parse(with_prompt(moderation=moderation), family).upstream_body == {"prompt": PROMPT, "moderation": moderation}


@pytest.mark.parametrize("family", GPT_FAMILIES)
@pytest.mark.parametrize(("value", "code"), [("high", "invalid_value"), ("off", "invalid_value"), (0, "invalid_type")])
def test_bad_moderation_is_refused(value: object, code: str, family: str) -> None:
    refused(with_prompt(moderation=value), family, code, "moderation")


# --- user -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("user", ["user-42", "", "ü" * 256])
def test_user_is_passed_through(user: str, family: str) -> None:
    assert parse(with_prompt(user=user), family).upstream_body["user"] == user


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_user_over_256_characters_is_refused(family: str) -> None:
    refused(with_prompt(user="u" * 257), family, "string_above_max_length", "user")


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("user", [42, True, ["u"]])
def test_user_of_wrong_type_is_refused(user: object, family: str) -> None:
    refused(with_prompt(user=user), family, "invalid_type", "user")


# --- model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("model", [DEPLOYMENT, "family"])
def test_model_naming_the_deployment_or_family_is_accepted_and_never_sent(model: str, family: str) -> None:
    model = family if model == "family" else model
    request = parse(with_prompt(model=model), family)
    assert "model" not in request.upstream_body
    assert request.asked == {"prompt": PROMPT, "model": model}


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("model", ["other-deployment", "dall-e-2", DEPLOYMENT.upper(), ""])
def test_model_naming_something_else_is_refused(model: str, family: str) -> None:
    error = refused(with_prompt(model=model), family, "invalid_value", "model")
    assert DEPLOYMENT in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_v1_model_must_be_the_deployment(family: str) -> None:
    request = parse(with_prompt(model=DEPLOYMENT), family, api_style_v1=True)
    assert "model" not in request.upstream_body
    refused(with_prompt(model=family), family, "invalid_value", "model", api_style_v1=True)
    refused(with_prompt(model="other"), family, "invalid_value", "model", api_style_v1=True)


def test_v1_model_equal_to_the_family_is_fine_when_the_deployment_is_named_like_it() -> None:
    request = parse(with_prompt(model=GPT_IMAGE_2), GPT_IMAGE_2, deployment=GPT_IMAGE_2, api_style_v1=True)
    assert request.upstream_body == {"prompt": PROMPT}


@pytest.mark.parametrize("api_style_v1", [False, True])
@pytest.mark.parametrize("model", [1, True, [DEPLOYMENT], {"name": DEPLOYMENT}])
def test_model_of_wrong_type_is_refused(model: object, api_style_v1: bool) -> None:
    refused(with_prompt(model=model), GPT_IMAGE_1, "invalid_type", "model", api_style_v1=api_style_v1)


# --- nulls, whole requests -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_null_options_count_as_not_given(family: str) -> None:
    body = {name: None for name in KNOWN_FIELDS} | {"prompt": PROMPT}
    request = parse(body, family)
    assert request.asked == {"prompt": PROMPT}
    assert request.upstream_body == (
        {"prompt": PROMPT, "response_format": "b64_json"} if family == DALL_E_3 else {"prompt": PROMPT}
    )
    assert (request.response_format, request.n, request.output_format, request.translations) == ("url", 1, "png", [])


def test_seed_request_to_dall_e_3_goes_upstream_as_given_but_base64() -> None:
    body = {"prompt": PROMPT, "size": "1024x1024", "n": 1, "quality": "hd", "style": "vivid", "user": "u1"}
    request = parse(body, DALL_E_3, deployment="dalle3")
    assert request == ImageRequest(
        deployment="dalle3",
        family=DALL_E_3,
        asked=body,
        upstream_body={**body, "response_format": "b64_json"},
        response_format="url",
        n=1,
        output_format="png",
        translations=[],
    )


@pytest.mark.parametrize(
    ("family", "size", "size_translations"),
    [
        (
            GPT_IMAGE_1,
            "1536x1024",
            ["size: '1792x1024' -> '1536x1024' (gpt-image-1 has no 1792x1024; nearest size, same orientation)"],
        ),
        (
            GPT_IMAGE_1_MINI,
            "1536x1024",
            ["size: '1792x1024' -> '1536x1024' (gpt-image-1-mini has no 1792x1024; nearest size, same orientation)"],
        ),
        (
            GPT_IMAGE_1_5,
            "1536x1024",
            ["size: '1792x1024' -> '1536x1024' (gpt-image-1.5 has no 1792x1024; nearest size, same orientation)"],
        ),
        (GPT_IMAGE_2, "1792x1024", []),
    ],
)
def test_seed_request_to_gpt_image_is_translated_not_refused(family: str, size: str, size_translations: list[str]) -> None:
    body = {"prompt": PROMPT, "size": "1792x1024", "n": 1, "quality": "hd", "style": "vivid", "response_format": "url"}
    request = parse(body, family)
    assert request == ImageRequest(
        deployment=DEPLOYMENT,
        family=family,
        asked=body,
        upstream_body={"prompt": PROMPT, "size": size, "n": 1, "quality": "high"},
        response_format="url",
        n=1,
        output_format="png",
        translations=[
            *size_translations,
            "quality: 'hd' -> 'high'",
            f"style: 'vivid' dropped ({family} has no style)",
            "response_format: 'url' kept by this service, not sent upstream (gpt-image always returns base64)",
        ],
    )


@pytest.mark.parametrize("family", GPT_FAMILIES)
def test_full_gpt_image_request_goes_upstream_as_given(family: str) -> None:
    body = {
        "model": family,
        "prompt": PROMPT,
        "size": "1024x1536",
        "n": 4,
        "quality": "medium",
        "output_format": "jpeg",
        "output_compression": 70,
        "background": "opaque",
        "moderation": "low",
        "user": "u1",
        "response_format": "b64_json",
    }
    request = parse(body, family)
    upstream = {k: v for k, v in body.items() if k not in ("model", "response_format")}
    assert request.upstream_body == upstream
    assert request.asked == body
    assert (request.response_format, request.n, request.output_format) == ("b64_json", 4, "jpeg")
    assert request.translations == [
        "response_format: 'b64_json' kept by this service, not sent upstream (gpt-image always returns base64)"
    ]


# --- the family table: one row per family, everything else derived ----------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_accepted_families_are_the_rows_with_rules() -> None:
    assert len({row.name for row in TABLE}) == len(TABLE), "one row per family"
    assert {row.name for row in TABLE if row.rules is not None} == FAMILIES
    assert FAMILIES == {DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5, GPT_IMAGE_2}
    assert {row.name for row in TABLE if row.rules is None} == {GPT_IMAGE_2_5_FLARE, GPT_IMAGE_2_5_SUNBURST}
    for name in FAMILIES:
        assert PROMPT_LIMITS[name] == rules_of(name).prompt_max_chars
        assert family_for_name(f" {name.upper()} ") == name


@pytest.mark.parametrize("name", [GPT_IMAGE_2_5_FLARE, GPT_IMAGE_2_5_SUNBURST, "gpt-image-2.5"])
def test_openai_only_families_are_not_accepted_until_azure_publishes_their_rules(name: str) -> None:
    assert family_for_name(name) is None
    with pytest.raises(ValueError, match="unknown model family"):
        parse({"prompt": PROMPT}, name)
    if name in BY_NAME:
        row = BY_NAME[name]
        assert row.status == "openai-only" and not row.in_templates and row.version is None
        assert "xhigh" in row.notes and "Not found for Azure" in row.notes, "say what was and was not documented"


def test_rows_are_consistent() -> None:
    for row in TABLE:
        assert row.sources, f"{row.name}: every row names its sources"
        if row.no_new_customers and row.retires:
            assert row.no_new_customers <= row.retires, row.name
        if row.successor is not None:
            successor = BY_NAME[row.successor]
            assert successor.rules is not None and successor.name != row.name, row.name
        if row.in_templates:
            assert row.rules is not None and row.version, f"{row.name}: the templates deploy a version the service accepts"
        assert all(sku in {"Standard", "GlobalStandard", "DataZoneStandard"} for sku in row.requests_per_minute), row.name


def test_the_default_model_deploys_on_a_new_subscription() -> None:
    """Finding 3: the default needs no registration and still takes new customers (no deprecation date)."""
    default = BY_NAME[IAC_DEFAULT_MODEL]
    assert IAC_DEFAULT_MODEL == GPT_IMAGE_2 and IAC_DEFAULT_MODEL in iac_versions()
    assert not default.registration and default.no_new_customers is None and default.status == "ga"


def test_versions_are_per_model() -> None:
    """Finding 4: one version default fitted gpt-image-1-mini only."""
    assert iac_versions() == {GPT_IMAGE_1_MINI: "2025-10-06", GPT_IMAGE_1_5: "2025-12-16", GPT_IMAGE_2: "2026-04-21"}
    assert BY_NAME[GPT_IMAGE_1].version == "2025-04-15" and not BY_NAME[GPT_IMAGE_1].in_templates


def test_no_module_but_the_table_names_a_family() -> None:
    """Adding a family is adding a row: the rest of shared/models reads the rows."""
    names = "|".join(re.escape(row.name) for row in TABLE)
    family_literal = re.compile(rf"[\"']({names})[\"']|\b(GPT_IMAGE_\w+|DALL_E_3)\b")
    for path in (ROOT / "shared" / "models").glob("*.py"):
        if path.name in ("families.py", "__init__.py"):  # the table, and the re-exports of its names
            continue
        found = family_literal.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.name} names the family {found.group()}: read it from the rows instead"


# --- lifecycle at run time ---------------------------------------------------------------------------

DEPLOYMENTS = {"images": GPT_IMAGE_2, "legacy": GPT_IMAGE_1, "mini": GPT_IMAGE_1_MINI, "seed": DALL_E_3}


@pytest.mark.parametrize(
    ("name", "day", "state"),
    [
        (GPT_IMAGE_1_MINI, date(2026, 10, 5), "ga"),
        (GPT_IMAGE_1_MINI, date(2026, 10, 6), "no-new-customers"),
        (GPT_IMAGE_1_MINI, date(2027, 4, 6), "no-new-customers"),
        (GPT_IMAGE_1_MINI, date(2027, 4, 7), "retired"),
        (GPT_IMAGE_1_5, date(2026, 12, 16), "ga"),  # the April 2026 schedule's date; moved to 2027-06-16
        (GPT_IMAGE_2, date(2026, 11, 25), "ga"),
        (GPT_IMAGE_2_5_FLARE, date(2026, 11, 25), "openai-only"),
        (GPT_IMAGE_1_5, date(2027, 6, 15), "ga"),
        (GPT_IMAGE_1_5, date(2027, 6, 16), "retired"),
        (GPT_IMAGE_2, date(2027, 10, 20), "ga"),
        (GPT_IMAGE_2, date(2027, 10, 21), "retired"),
    ],
)
def test_lifecycle_state_follows_azures_dates(name: str, day: date, state: str) -> None:
    assert lifecycle_state(BY_NAME[name], day) == state


def test_lifecycle_view_shows_every_allowed_deployment() -> None:
    view = lifecycle_view({**DEPLOYMENTS, "custom": "dall-e-2"}, date(2026, 11, 25))
    assert [entry["deployment"] for entry in view] == ["custom", "images", "legacy", "mini", "seed"]
    by_deployment = {entry["deployment"]: entry for entry in view}
    assert by_deployment["mini"] == {
        "deployment": "mini",
        "family": GPT_IMAGE_1_MINI,
        "status": "no-new-customers",
        "no_new_customers": "2026-10-06",
        "retires": "2027-04-07",
        "successor": GPT_IMAGE_2,
    }
    assert by_deployment["images"]["status"] == "ga" and by_deployment["images"]["successor"] is None
    assert by_deployment["legacy"]["status"] == "retired"
    assert by_deployment["custom"] == {
        "deployment": "custom", "family": "dall-e-2", "status": "unknown",
        "no_new_customers": None, "retires": None, "successor": None,
    }  # fmt: skip


def test_retired_families_are_warned_about_naming_the_successor() -> None:
    warnings = retired_warnings(DEPLOYMENTS, date(2026, 11, 25))
    assert [deployment for deployment, _ in warnings] == ["legacy", "seed"], "one per deployment"
    (_, legacy), (_, seed) = warnings
    assert "'legacy'" in legacy and GPT_IMAGE_1 in legacy and "2026-10-23" in legacy and f"deploy {GPT_IMAGE_2}" in legacy
    assert "'seed'" in seed and DALL_E_3 in seed and "2026-03-04" in seed
    assert retired_warnings(DEPLOYMENTS, date(2026, 3, 3)) == []
    assert len(retired_warnings(DEPLOYMENTS, date(2027, 4, 7))) == 3  # gpt-image-1-mini too, from its retirement day
    assert retired_warnings({"images": GPT_IMAGE_2}, date(2027, 10, 21)) == [(
        "images",
        "deployment 'images' runs gpt-image-2, which Azure retired on 2027-10-21; "
        "requests still go upstream until Azure refuses them: choose a current model",
    )]  # fmt: skip
