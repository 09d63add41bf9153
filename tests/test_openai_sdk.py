"""The official openai package, unchanged, against the local API; and the URL-only upstream path."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import httpx
import openai
import pytest

from local.servers import ServerThread, serve_in_thread
from shared.errors import ServiceError
from shared.settings import Settings
from shared.upstream import UpstreamClient
from tests.conftest import SIM_KEY, SimControl


def azure_client(api: ServerThread) -> openai.AzureOpenAI:
    # In Azure the function key goes in x-functions-key; locally there is none to send.
    return openai.AzureOpenAI(azure_endpoint=api.url, api_key="unused-locally", api_version="2025-04-01-preview", max_retries=0)


def test_openai_sdk_gpt_image_returns_archived_url(api: ServerThread, sim: SimControl) -> None:
    result = azure_client(api).images.generate(model="gpt-image-1", prompt="a red bicycle", size="1024x1024", quality="low")
    assert result.data and result.data[0].url
    image = httpx.get(result.data[0].url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert result.usage is not None and result.usage.total_tokens > 0


def test_openai_sdk_dall_e_3_links_outlive_the_model_services_url(api: ServerThread, sim: SimControl) -> None:
    sim.configure(url_ttl_seconds=1)
    # What the model service itself hands out for dall-e-3: a URL that expires.
    direct = httpx.post(
        f"{sim.url}/openai/deployments/dall-e-3/images/generations?api-version=2025-04-01-preview",
        json={"prompt": "a fox", "response_format": "url"},
        headers={"api-key": SIM_KEY},
    ).json()["data"][0]["url"]
    result = azure_client(api).images.generate(model="dall-e-3", prompt="a fox", quality="hd", style="natural")
    item = result.data[0] if result.data else None
    assert item is not None and item.url and item.revised_prompt
    sim.clock(advance=2)  # past the 1 s lifetime (rounded up to a whole second, as SAS se= is)
    assert httpx.get(direct).status_code == 403  # the model service's link has expired
    archived = httpx.get(item.url)  # this service's link still serves the archived copy
    assert archived.status_code == 200 and archived.content.startswith(b"\x89PNG")


def test_openai_sdk_decodes_b64_json_from_a_gpt_image_deployment_without_asking(api: ServerThread, sim: SimControl) -> None:
    """Code written for gpt-image reads data[0].b64_json (the model always answers base64); url links to the archived copy."""
    result = azure_client(api).images.generate(model="gpt-image-1-mini", prompt="a lighthouse at dawn")
    assert result.data and result.data[0].b64_json and result.data[0].url
    image = base64.b64decode(result.data[0].b64_json)
    assert image.startswith(b"\x89PNG") and httpx.get(result.data[0].url).content == image


def test_openai_sdk_b64_json(api: ServerThread, sim: SimControl) -> None:
    result = azure_client(api).images.generate(model="gpt-image-1-mini", prompt="x", response_format="b64_json")
    assert result.data and result.data[0].b64_json


def test_openai_sdk_filtered_prompt_raises_bad_request_with_content_filter(api: ServerThread, sim: SimControl) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        azure_client(api).images.generate(model="gpt-image-1", prompt="forbidden [[filter:prompt]]")
    assert caught.value.code == "contentFilter"
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["message"] == "Your task failed as a result of our safety system."


def test_openai_sdk_v1_style_client(api: ServerThread, sim: SimControl) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/openai/v1", api_key="unused-locally", max_retries=0)
    result = client.images.generate(model="gpt-image-1-mini", prompt="x")
    assert result.data and result.data[0].url and httpx.get(result.data[0].url).status_code == 200


def test_openai_sdk_unknown_deployment_is_not_found(api: ServerThread, sim: SimControl) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        azure_client(api).images.generate(model="nope", prompt="x")
    assert caught.value.code == "DeploymentNotFound"


# --- an upstream that answers with a URL only: streamed once, capped, https only, same host ---


def url_from_simulator(sim: SimControl) -> str:
    return str(
        httpx.post(
            f"{sim.url}/openai/deployments/dall-e-3/images/generations?api-version=2025-04-01-preview",
            json={"prompt": "x", "response_format": "url"},
            headers={"api-key": SIM_KEY},
        ).json()["data"][0]["url"]
    )


def run_download(make_settings: Callable[..., Settings], url: str, **overrides: str) -> bytes:
    async def go() -> bytes:
        client = UpstreamClient(make_settings(**overrides), auth=None)
        try:
            return await client.download(url)
        finally:
            await client.close()

    return asyncio.run(go())


def test_url_only_upstream_is_downloaded_once(make_settings: Callable[..., Settings], sim: SimControl) -> None:
    data = run_download(make_settings, url_from_simulator(sim))
    assert data.startswith(b"\x89PNG") and len(data) > 100_000


def test_url_download_is_capped(make_settings: Callable[..., Settings], sim: SimControl) -> None:
    with pytest.raises(ServiceError) as caught:
        run_download(make_settings, url_from_simulator(sim), IMAGES_MAX_IMAGE_BYTES="10000")
    assert caught.value.status == 502 and "larger than 10000" in caught.value.message


def test_url_download_refuses_http_outside_local_mode(make_settings: Callable[..., Settings], sim: SimControl) -> None:
    url = url_from_simulator(sim)
    # The endpoint check at start refuses http too; the download check is what is proven here.
    settings = make_settings().model_copy(update={"allow_http_upstream": False})

    async def go() -> None:
        client = UpstreamClient(settings, auth=None)
        try:
            await client.download(url)
        finally:
            await client.close()

    with pytest.raises(ServiceError) as caught:
        asyncio.run(go())
    assert "not https" in caught.value.message


def test_url_download_refuses_redirect_to_another_host(make_settings: Callable[..., Settings]) -> None:
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    redirector = FastAPI()

    @redirector.get("/image.png")
    async def image() -> RedirectResponse:
        return RedirectResponse("http://localhost:9/elsewhere.png", status_code=302)

    server = serve_in_thread(redirector)
    try:
        with pytest.raises(ServiceError) as caught:
            run_download(make_settings, f"{server.url}/image.png")
        assert "another host" in caught.value.message
    finally:
        server.stop()


def test_url_download_after_expiry_is_upstream_error(make_settings: Callable[..., Settings], sim: SimControl) -> None:
    sim.configure(url_ttl_seconds=1)
    url = url_from_simulator(sim)
    sim.clock(advance=2)
    with pytest.raises(ServiceError) as caught:
        run_download(make_settings, url)
    assert caught.value.status == 502 and "403" in caught.value.message


@pytest.mark.parametrize("status", [408, 500])
def test_the_openai_sdk_with_its_own_retries_does_not_resend_what_upstream_may_have_worked_on(api: ServerThread, sim: SimControl, status: int) -> None:
    """The SDK retries a 5xx (and a 408) by default; the service's answer tells it not to (``x-should-retry: false``)."""
    sim.configure(fail_next=1, fail_status=status)
    client = openai.AzureOpenAI(azure_endpoint=api.url, api_key="unused-locally", api_version="2025-04-01-preview", max_retries=2)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="gpt-image-1", prompt="billed once at most")
    assert caught.value.status_code == 502 and "not repeated" in caught.value.message.lower()
    assert sim.stats()["requests"] == 1  # not the SDK's three
