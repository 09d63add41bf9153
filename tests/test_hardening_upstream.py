"""The upstream client at its edges: absurd headers, echoed secrets, unbounded or malformed bodies,
image URLs that lead elsewhere, and exceptions nobody expected.

In process: the images simulator (with its fault routes) behind httpx's ASGI transport, and httpx's
own MockTransport for answers no simulator gives. What travels over a real socket (dripping,
dropped connections, bounded reads) is in tests/test_hardening_faults.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from local import faults
from local.simulator import SimulatorConfig, create_simulator
from shared.credentials import KeyAuth
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import parse_request
from shared.settings import Settings
from shared.upstream import ImageBodyReader, UpstreamClient, map_error, parse_retry_after
from shared.upstream.body import MAX_DEPTH, MAX_SKELETON_BYTES, MAX_STRING_BYTES

KEY = "hardening-test-key-0123456789"
LOCAL = "http://simulator.test"
AZURE = "https://res.openai.azure.com"


def settings(endpoint: str = LOCAL) -> Settings:
    env = {
        "AZURE_OPENAI_ENDPOINT": endpoint,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini",
        "AZURE_OPENAI_API_KEY": KEY,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "IMAGES_MAX_RETRIES": "0",
    }
    if endpoint.startswith("http:"):
        env["IMAGES_ALLOW_HTTP_UPSTREAM"] = "true"
    return Settings.from_env(env)


@pytest.fixture()
def simulator() -> Iterator[Any]:
    yield create_simulator(SimulatorConfig(prewarm=False))


async def client_for(app: Any, endpoint: str = LOCAL) -> UpstreamClient:
    return UpstreamClient(settings(endpoint), KeyAuth(KEY), httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))


def request(prompt: str = "a lighthouse") -> Any:
    return parse_request({"prompt": prompt, "quality": "low", "size": "1024x1024"}, "gpt-image-1-mini", "gpt-image-1-mini")


# --------------------------------------------------------------------------- absurd headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1e400"}, None),
        ({"retry-after-ms": "nan"}, None),
        ({"retry-after-ms": "-inf"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "Infinity"}, None),
        ({"retry-after-ms": "NaN", "Retry-After": "3"}, 3.0),  # the nonsense one is skipped
        ({"Retry-After": "1e12"}, 3600.0),  # capped
        ({"retry-after-ms": "250"}, 0.25),
    ],
)
def test_absurd_retry_after_values_are_ignored_or_capped(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


@pytest.mark.parametrize(("seconds", "expected"), [(math.inf, None), (math.nan, None), (-4.0, None), (1e300, "3600"), (0.2, "1")])
def test_error_headers_are_sane_whatever_the_retry_after(seconds: float, expected: str | None) -> None:
    headers = ServiceError(429, "429", "throttled", retry_after=seconds).headers()  # never an OverflowError
    assert headers.get("Retry-After") == expected
    if expected:
        assert 0 <= int(headers["retry-after-ms"]) <= 3_600_000


# --------------------------------------------------------------------------- no reflection


FAKE_ACCOUNT_KEY = "QUJDREVGR0hJSktM" + "TU5PUFFSU1RVVldYWVo"  # base64 of the alphabet: not a key of anything
ECHOES = [  # (what upstream says, the secret in it)
    (f"your api-key {KEY} is wrong", KEY),
    ("api-key: 0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
    ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("see https://x.blob.core.windows.net/c/b?sv=2024&sig=c2lnbmF0dXJl%3D&se=2030", "c2lnbmF0dXJl"),
    # A made-up account key, assembled here so no key-shaped literal sits in the repository.
    ("AccountKey=" + FAKE_ACCOUNT_KEY + "=", FAKE_ACCOUNT_KEY),
    (f"token {faults.ECHOED_JWT}", faults.ECHOED_JWT),
    ("key 8c7d64a7d1cb4d3c9a2e1f0b5c6d7e8f", "8c7d64a7d1cb4d3c9a2e1f0b5c6d7e8f"),  # an Azure OpenAI key's 32-hex shape
    ("key 4pBvHlyF3b9XkG2sQe7TnA0ZcJ1uWmR8dVhYiL5oKxNf6gEtS9bUaCqPwMzD3rJ7vB2nA0ZcJ1uWmR8dVhYiL5o", "4pBvHlyF3b9XkG2sQe7T"),  # the 84-character shape
    ("OpenAI key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "AbCdEfGhIjKlMnOpQrStUvWxYz"),
]


@pytest.mark.parametrize(("message", "secret"), ECHOES)
def test_upstream_error_text_is_redacted_before_it_reaches_anyone(message: str, secret: str) -> None:
    KeyAuth(KEY)  # the app's own key is known to the redaction from the moment it is read
    for status in (400, 403, 404, 500):
        error = map_error(status, {"error": {"code": "bad", "message": message}}, httpx.Headers())
        assert secret not in json.dumps(error.body()), (status, error.message)
        assert "***" in error.message


def test_upstream_error_text_code_and_param_are_capped() -> None:
    body = {"error": {"code": "c" * 100_000, "message": "m " * 100_000, "param": "p" * 100_000}}
    for status in (400, 403, 404, 500):
        error = map_error(status, body, httpx.Headers())
        assert len(json.dumps(error.body())) < 2000, status


# --------------------------------------------------------------------------- the 200 body: bounds and strictness


def read(body: bytes, limit: int = 10_000_000) -> Any:
    reader = ImageBodyReader(limit)
    for start in range(0, len(body), 1000):
        reader.feed(body[start : start + 1000])
    return reader.result()


def test_a_deeply_nested_answer_is_refused_without_recursion() -> None:
    body = b'{"data": [], "usage": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(ServiceError) as caught:
        read(body)
    assert caught.value.status == 502 and not caught.value.transient


def test_nesting_up_to_the_limit_is_read() -> None:
    depth = MAX_DEPTH - 1  # the document's own object is one level
    assert read(b'{"x": ' + b"[" * depth + b"]" * depth + b"}")["x"] is not None


def test_the_skeleton_outside_the_images_is_capped() -> None:
    body = json.dumps({"data": [], "junk": [1] * (MAX_SKELETON_BYTES // 2)}).encode()
    with pytest.raises(ServiceError) as caught:
        read(body)
    assert caught.value.status == 502


def test_a_huge_string_outside_the_images_is_cut_not_kept() -> None:
    long = "é and \\\"quotes\\\" " * 200_000
    body = json.dumps({"data": [{"b64_json": "QUJD", "revised_prompt": long}], "created": 1}).encode()
    document = read(body)
    kept = document["data"][0]["revised_prompt"]
    assert 0 < len(kept.encode()) <= MAX_STRING_BYTES and long.startswith(kept)
    assert document["created"] == 1


@pytest.mark.parametrize(
    "body",
    [b'{"created": NaN, "data": []}', b'{"created": Infinity, "data": []}', b'{"created": 1e400, "data": []}',
     b'{"data": [], "data": []}', b'{"data": [], "n": 1' + b"0" * 5000 + b"}"],
    ids=["nan", "infinity", "overflow", "duplicate-key", "huge-int"],
)
def test_an_answer_that_is_not_strict_json_is_refused(body: bytes) -> None:
    with pytest.raises((ValueError, ServiceError)):
        read(body)


# --------------------------------------------------------------------------- image URLs


@pytest.mark.parametrize(
    ("endpoint", "url", "allowed"),
    [
        (LOCAL, f"{LOCAL}/_sim/faults/image.png", True),
        (LOCAL, "http://simulator.test:8080/_sim/faults/image.png", False),  # another port of the same host
        (LOCAL, "http://other.test/_sim/faults/image.png", False),
        (LOCAL, "https://store.blob.core.windows.net/_sim/faults/image.png", False),  # local mode: the upstream only
        (LOCAL, f"{LOCAL}/_sim/faults/redirect?port=80", False),  # no redirects at all
        (AZURE, f"{AZURE}/_sim/faults/image.png", True),
        (AZURE, "https://store.blob.core.windows.net/_sim/faults/image.png", True),
        (AZURE, "http://res.openai.azure.com/_sim/faults/image.png", False),  # https only
        (AZURE, "https://store.blob.core.windows.net.evil.test/_sim/faults/image.png", False),
        (AZURE, "https://evil.test/_sim/faults/image.png", False),
        (AZURE, "https://user:pw@res.openai.azure.com/_sim/faults/image.png", False),
        (AZURE, "https://res.openai.azure.com:8443/_sim/faults/image.png", False),
        (AZURE, "https://res.openai.azure.com:bad/_sim/faults/image.png", False),
    ],
)
async def test_image_urls_are_fetched_only_from_the_upstream_or_azure_blob_storage(simulator: Any, endpoint: str, url: str, allowed: bool) -> None:
    client = await client_for(simulator, endpoint)
    before = sum(faults.HITS.values())
    try:
        if allowed:
            assert (await client.download(url)) == faults.png_image()
        else:
            with pytest.raises(ServiceError) as caught:
                await client.download(url)
            assert (caught.value.status, caught.value.transient) == (502, False)
            assert faults.HITS.total() - before <= (1 if "redirect" in url else 0)  # the redirect answered; its target never asked
    finally:
        await client.http.aclose()


# --------------------------------------------------------------------------- exceptions nobody expected


def broken_stream(exc: BaseException) -> httpx.MockTransport:
    """An upstream that answers 200 and then fails in a way no code path expects."""

    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"created": 1, "data": [{"b64_json": "'
            raise exc

    return httpx.MockTransport(lambda request: httpx.Response(200, stream=Stream()))


@pytest.mark.parametrize("exc", [ZeroDivisionError("a bug"), MemoryError(), UnicodeDecodeError("utf-8", b"", 0, 1, "x")], ids=repr)
async def test_an_unexpected_exception_after_sending_is_a_502_never_repeated(exc: BaseException) -> None:
    client = UpstreamClient(settings(), KeyAuth(KEY), httpx.AsyncClient(transport=broken_stream(exc)))
    with pytest.raises(ServiceError) as caught:
        await client.generate(request(), deadline=Deadline(30), budget=30)
    assert (caught.value.status, caught.value.transient) == (502, False)
    assert "not repeated" in caught.value.message.lower()


class BrokenAuth(KeyAuth):
    """Credentials whose headers fail with a bug's exception: nothing can have been sent."""

    async def headers(self) -> dict[str, str]:
        raise KeyError("a bug before sending")


async def test_an_unexpected_exception_before_sending_is_a_transient_error(simulator: Any) -> None:
    client = UpstreamClient(settings(), BrokenAuth(KEY), httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator)))
    with pytest.raises(ServiceError) as caught:
        await client.generate(request(), deadline=Deadline(30), budget=30)
    assert caught.value.transient and caught.value.status == 503
    assert simulator.state.sim.snapshot()["requests"] == 0


async def test_more_images_than_asked_are_dropped_and_a_format_mismatch_keeps_the_true_type(simulator: Any) -> None:
    client = await client_for(simulator)
    try:
        result = await client.generate(request("x [[extra-images]] [[webp]]"), deadline=Deadline(30), budget=30)
    finally:
        await client.http.aclose()
    assert [i.content_type for i in result.images] == ["image/webp"]
    assert result.images[0].data == faults.webp_image()


async def test_no_free_connection_within_the_deadline_is_a_transient_error_and_nothing_is_sent(simulator: Any) -> None:
    env_settings = settings().model_copy(update={"max_concurrent_upstream": 1})
    client = UpstreamClient(env_settings, KeyAuth(KEY), httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator)))
    async with client.limiter:  # every upstream slot of this instance is taken
        with pytest.raises(ServiceError) as caught:
            await client.generate(request(), deadline=Deadline(0.2), budget=0)
    assert (caught.value.status, caught.value.code, caught.value.transient) == (503, "UpstreamBusy", True)
    assert simulator.state.sim.snapshot()["requests"] == 0
