"""Input hygiene without I/O: the rules of request parsing, the strict JSON reader, name patterns and echoes.

``parse_request`` is shared by the HTTP routes and the queue handler, so what is refused
here is refused for queue bodies too. Each rule is checked on the function that owns it;
tests/test_hardening_input_http.py checks the same rules through the routes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared import strictjson
from shared.archive import is_archive_path, is_safe_id
from shared.echo import ECHO_LIMIT, capped, shown
from shared.errors import ServiceError
from shared.models import DALL_E_3, FAMILIES, GPT_IMAGE_1, GPT_IMAGE_2, parse_request
from shared.settings import Settings, SettingsError

ALL_FAMILIES = sorted(FAMILIES)
BASE = {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def refused(body: object, family: str = GPT_IMAGE_1, *, deployment: str = "images-prod", api_style_v1: bool = False) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        parse_request(body, deployment, family, api_style_v1=api_style_v1)
    error = caught.value
    assert error.status == 400
    json.dumps(error.body(), ensure_ascii=False).encode("utf-8")  # the refusal itself can always be sent
    return error


def sent(body: dict[str, Any], family: str = GPT_IMAGE_1) -> dict[str, Any]:
    return parse_request(body, "images-prod", family).upstream_body


# --- text that cannot be stored as UTF-8 ---------------------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a cat\ud800"}, "prompt"),
        ({"prompt": "\udc00 a cat"}, "prompt"),
        ({"prompt": "a cat", "user": "u\udfff"}, "user"),
        ({"prompt": "a cat", "model": "images-prod\ud83d"}, "model"),
        ({"prompt": "a cat", "size": "1024x1024\ud800"}, "size"),
        ({"prompt": "a cat", "quality": "\ud800"}, "quality"),
        ({"prompt": "a cat", "style": "vivid\ud800"}, "style"),
        ({"prompt": "a cat", "response_format": "url\ud800"}, "response_format"),
    ],
)
def test_unpaired_surrogates_are_refused_naming_the_parameter(family: str, body: dict[str, Any], param: str) -> None:
    error = refused(body, family)
    assert (error.code, error.param) == ("invalid_encoding", param)
    assert "U+D" in error.message


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_parameter_name_that_is_not_unicode_is_refused_without_echoing_it_raw(family: str) -> None:
    error = refused({"prompt": "a cat", "siz\ud800e": "auto"}, family)
    assert (error.code, error.param) == ("invalid_encoding", None)


def test_paired_surrogates_are_one_character_and_welcome() -> None:
    prompt = json.loads('"a cat \\ud83d\\ude00"')  # JSON's escape pair for one emoji
    assert sent({"prompt": prompt})["prompt"] == "a cat 😀"


# --- prompts with nothing to draw, and control characters ------------------------------------------------


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize(
    "prompt",
    ["\x00", "\x00\x01\x02", " \t\r\n", "\u200b", "\u200b\u200c\u200d\u2060", "\ufeff", "\u00ad", "\u2800", "\u3164\u115f", "\u0301\u0302", "\ufe0f", "\uffff", "\u202e"],
)
def test_a_prompt_with_no_visible_character_is_refused(family: str, prompt: str) -> None:
    error = refused({"prompt": prompt}, family)
    assert (error.code, error.param) == ("invalid_value", "prompt")


@pytest.mark.parametrize("field", ["prompt", "user"])
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"])
def test_control_characters_inside_free_text_are_refused_not_stripped(field: str, char: str) -> None:
    body = {"prompt": "a cat", field: f"a cat{char}on a mat"}
    error = refused(body, GPT_IMAGE_1)
    assert (error.code, error.param) == ("invalid_value", field)
    assert f"U+{ord(char):04X} at position 5" in error.message


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat\ton a mat\r\nwith a hat",  # tab, CR and LF are text
        "a technologist 👩\u200d💻",  # a zero-width joiner inside an emoji sequence
        "שלום\u200f cat",  # a right-to-left mark
        "caf\u00e9 and cafe\u0301",  # precomposed and combining accents
        "\u200ba cat",  # an invisible character beside a visible one is the caller's business
        "\U0001fa75",  # an emoji newer than this Python's Unicode database
        "\ue000",  # private use: a font draws it
    ],
)
@pytest.mark.parametrize("family", [DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_2])
def test_text_with_something_to_draw_is_sent_exactly_as_given(prompt: str, family: str) -> None:
    assert sent({"prompt": prompt, "user": "someone\tsomewhere"} if family != DALL_E_3 else {"prompt": prompt}, family)["prompt"] == prompt


# --- the strict JSON reader ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"prompt": "a", "prompt": "b"}', '{"prompt": "a", "user": {"x": 1, "x": 1}}', '[{"a": 1}, {"b": 1, "b": 2}]'],
)
def test_a_key_given_twice_is_refused_wherever_it_is(text: str) -> None:
    with pytest.raises(ServiceError) as caught:
        strictjson.decode(text)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert "twice" in caught.value.message


def test_nesting_is_bounded_before_parsing() -> None:
    limit = strictjson.MAX_DEPTH
    assert strictjson.decode("[" * limit + "]" * limit) is not None
    assert strictjson.decode('{"a":' * limit + "1" + "}" * limit) is not None
    for text in ("[" * (limit + 1) + "]" * (limit + 1), "[" * 100_000, '{"a": ' * 50_000, '[{"a": [{"b": ' * 9 + "1" + "}]}]" * 9):
        with pytest.raises(ServiceError) as caught:
            strictjson.decode(text)
        assert caught.value.code == "invalid_json" and "nested deeper" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        '{"prompt": "' + "[" * 5000 + '"}',  # brackets inside a string are text
        '{"prompt": "\\"' + "{" * 5000 + '\\""}',  # ... after an escaped quote too
        '{"prompt": "\\\\", "user": "' + "[" * 100 + '"}',  # an escaped backslash ends before the quote
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert isinstance(strictjson.decode(text), dict)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"prompt": NaN}', "invalid_json"),
        (b'{"prompt": -Infinity}', "invalid_json"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "invalid_json"),  # more digits than int() takes
        (b'"' + b'\\"' * 50_000, "invalid_json"),  # an unclosed string full of escaped quotes
        (b'{"prompt": "\xed\xa0\x80"}', "invalid_encoding"),  # a surrogate encoded as UTF-8 bytes
        (b"\xff", "invalid_encoding"),
    ],
)
def test_other_malformed_bodies_are_400(data: bytes, code: str) -> None:
    with pytest.raises(ServiceError) as caught:
        strictjson.decode(data)
    assert (caught.value.status, caught.value.code) == (400, code)


# --- full matches for names ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x\n", "x\r\n", "job-1\n", "\nx", "x\x00", "\uff11\uff12\uff13", "x" * 65, "", "-x", "a/b", "x "])
def test_a_safe_id_is_the_whole_value(value: str) -> None:
    assert not is_safe_id(value)


@pytest.mark.parametrize(
    "name", ["2026-01-01/abc/0.png\n", "jobs/abc/record.json\n", "jobs/abc/0.png\r", "jobs/abc/٣.png", "jobs/abc/0.gif", "../abc/0.png", "abc/0.png/x"]
)
def test_an_archive_path_is_the_whole_name(name: str) -> None:
    assert not is_archive_path(name)


@pytest.mark.parametrize("name", ["2026-01-01/abc/0.png", "jobs/abc/9.jpg", "jobs/abc/10.webp", "jobs/abc/record.json"])
def test_names_the_archive_writes_are_archive_paths(name: str) -> None:
    assert is_archive_path(name)


# --- echoes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x" * 250_000, "\x00" * 5_000, "\ud800" * 1_000, 10**4000, ["a"] * 10_000])
def test_an_echo_is_capped_escaped_and_says_how_long_the_original_was(value: object) -> None:
    text = shown(value)
    assert len(text) < ECHO_LIMIT + 40
    assert text.isprintable() and text.encode("utf-8")
    assert text.endswith("characters)")


def test_a_short_echo_is_the_values_repr() -> None:
    assert shown("a cat") == "'a cat'" and shown(12) == "12"


@pytest.mark.parametrize(("name", "param"), [("size", "size"), ("x" * 500, "x" * 100 + "…"), ("a\nb", "a\\nb"), ("\ud800", "\\ud800")])
def test_a_param_is_capped_and_printable(name: str, param: str) -> None:
    assert capped(name) == param


# --- the public base URL ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({}, ""),
        ({"WEBSITE_HOSTNAME": "my-app.azurewebsites.net"}, "https://my-app.azurewebsites.net"),
        ({"WEBSITE_HOSTNAME": "localhost:7071"}, "http://localhost:7071"),  # Core Tools, plain http
        ({"WEBSITE_HOSTNAME": "[::1]:7071"}, "http://[::1]:7071"),
        ({"IMAGES_PUBLIC_BASE_URL": "https://images.example.com/"}, "https://images.example.com"),
        ({"IMAGES_PUBLIC_BASE_URL": "https://gw.example.com/images", "WEBSITE_HOSTNAME": "my-app.azurewebsites.net"}, "https://gw.example.com/images"),
    ],
)
def test_the_public_base_comes_from_settings_never_from_a_request(env: dict[str, str], base: str) -> None:
    assert Settings.from_env({**BASE, **env}).public_base_url == base


def test_a_website_hostname_that_is_no_host_stops_the_app_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="IMAGES_PUBLIC_BASE_URL"):
        Settings.from_env({**BASE, "WEBSITE_HOSTNAME": "[::1"})


@pytest.mark.parametrize("value", ["images.example.com", "ftp://images.example.com", "https://u:p@images.example.com", "https://images.example.com/?a=1", "https://x.example.com/#f", "https://"])
def test_a_malformed_public_base_stops_the_app_naming_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match="IMAGES_PUBLIC_BASE_URL"):
        Settings.from_env({**BASE, "IMAGES_PUBLIC_BASE_URL": value})
