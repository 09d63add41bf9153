"""Image edits: API -> simulator over HTTP -> Azurite.

The openai SDK, unchanged, goes through a real uvicorn server (``api``); the contract and
every refusal run in process (``in_process``), each on a container of its own so what was
stored can be counted. The simulator's output depends on its inputs (the first image kept,
further images as thumbnails along the bottom, the mask's transparent part painted in a
colour taken from the prompt), so each test checks that the right inputs reached it.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from azure.storage.blob import BlobServiceClient
from PIL import Image

from local.azurite import Azurite
from local.servers import ServerThread
from local.sim_edits import fill_colour
from tests import scoping
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
EDITS = "/openai/deployments/{}/images/edits?api-version=2025-04-01-preview"
RED, BLUE, GREEN = (200, 30, 30), (20, 40, 220), (30, 180, 60)


def image_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = RED, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def mask_bytes(size: tuple[int, int] = (64, 48), hole: tuple[int, int, int, int] = (0, 0, 16, 16), mode: str = "RGBA") -> bytes:
    """Opaque, but for a transparent ``hole`` (left, top, right, bottom): where the edit paints."""
    mask = Image.new(mode, size, (0, 0, 0, 255) if mode == "RGBA" else 0)
    if mode == "RGBA":
        mask.paste((0, 0, 0, 0), hole)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body exactly as given (repeated or odd part names included), and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for index, (name, data) in enumerate(files):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f{index}.png"\r\nContent-Type: image/png\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    return b"".join([*parts, f"--{boundary}--\r\n".encode()]), {"content-type": f"multipart/form-data; boundary={boundary}"}


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def input_name(azurite: Azurite, data: bytes, extension: str = "png") -> str:
    """Where the app stores the key holder's upload ``data`` (keyed with the app's secret: tests/scoping.py)."""
    return scoping.input_name(azurite, data, extension)


def blob_names(azurite: Azurite, container: str) -> set[str]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return {b.name for b in client.list_blobs()} if client.exists() else set()


def record_of(azurite: Azurite, container: str, image_name: str) -> dict[str, Any]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    return json.loads(client.download_blob(image_name.rsplit("/", 1)[0] + "/record.json").readall())  # type: ignore[no-any-return]


def archived_name(url: str, container: str = "images") -> str:
    return httpx.URL(url).path.split(f"/{container}/", 1)[1]


async def own_container(in_process: InProcess, **overrides: str) -> tuple[httpx.AsyncClient, str]:
    container = f"edits-{uuid.uuid4().hex[:12]}"
    return await in_process(IMAGES_CONTAINER=container, **overrides), container


# --- the openai SDK, unchanged, over real HTTP ---


def azure_client(api: ServerThread) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=api.url, api_key="unused-locally", api_version="2025-04-01-preview", max_retries=0)


def test_sdk_single_image_edit_keeps_the_image_and_archives_input_and_output(api: ServerThread, azurite: Azurite, sim: SimControl) -> None:
    source = image_bytes(colour=BLUE)
    result = azure_client(api).images.edit(model="gpt-image-1", image=("shop.png", source, "image/png"), prompt="a brighter shelf", input_fidelity="high")
    assert result.data and result.data[0].url
    output = httpx.get(result.data[0].url)
    assert output.status_code == 200 and pixels(output.content).getpixel((10, 10)) == BLUE  # no mask: the image kept
    record = record_of(azurite, "images", archived_name(result.data[0].url))
    assert record["operation"] == "edit" and record["inputs"] == {"image": [input_name(azurite, source)], "mask": None}
    assert record["parameters"]["sent"]["input_fidelity"] == "high"
    assert input_name(azurite, source) in blob_names(azurite, "images")
    [call] = sim.stats()["recent"]
    assert call["path"] == "/openai/deployments/gpt-image-1/images/edits"
    assert [f["sha256"] for f in call["body"]["files"]] == [hashlib.sha256(source).hexdigest()]


def test_sdk_v1_client_multi_image_edit_sends_every_image_in_order(api: ServerThread, sim: SimControl) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/openai/v1", api_key="unused-locally", max_retries=0)
    images = [("a.png", image_bytes(colour=RED), "image/png"), ("b.jpg", image_bytes(colour=BLUE, fmt="JPEG"), "image/jpeg"), ("c.png", image_bytes(colour=GREEN), "image/png")]
    result = client.images.edit(model="gpt-image-1-mini", image=images, prompt="a collage")
    assert result.data and result.data[0].url
    out = pixels(httpx.get(result.data[0].url).content)
    # Image 1 is the canvas; images 2 and 3 are thumbnails (an eighth of each edge) along the bottom, in order.
    assert out.getpixel((40, 10)) == RED
    assert max(abs(a - b) for a, b in zip(out.getpixel((4, 45)), BLUE, strict=True)) < 8  # the JPEG, within its loss
    assert out.getpixel((12, 45)) == GREEN
    call = sim.stats()["recent"][-1]
    assert [f["name"] for f in call["body"]["files"]] == ["image[]"] * 3


def test_sdk_masked_edit_changes_the_masked_region_only(api: ServerThread, sim: SimControl) -> None:
    prompt = "a red umbrella in the corner"
    result = azure_client(api).images.edit(
        model="gpt-image-2", image=("photo.png", image_bytes(colour=GREEN), "image/png"), mask=("mask.png", mask_bytes(), "image/png"), prompt=prompt
    )
    assert result.data and result.data[0].url
    out = pixels(httpx.get(result.data[0].url).content)
    assert out.getpixel((5, 5)) == fill_colour(prompt)  # inside the transparent hole: edited
    assert out.getpixel((40, 30)) == GREEN  # outside: kept
    assert sim.stats()["edits"] == 1


def test_sdk_dall_e_3_edit_is_refused_with_the_reason(api: ServerThread, sim: SimControl) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        azure_client(api).images.edit(model="dall-e-3", image=("a.png", image_bytes(), "image/png"), prompt="x")
    assert caught.value.code == "OperationNotSupported" and "gpt-image" in caught.value.message
    assert sim.stats()["requests"] == 0


# --- refusals: status, code, parameter; nothing upstream, nothing stored ---

PNG, JPEG = image_bytes(), image_bytes(fmt="JPEG")
REFUSALS: list[tuple[str, str, list[tuple[str, bytes]], dict[str, str], int, str, str]] = [
    ("dall-e-3", "dall-e-3", [("image", PNG)], {"prompt": "x"}, 400, "OperationNotSupported", "deployment"),
    ("no image", "gpt-image-1", [], {"prompt": "x"}, 400, "missing_required_parameter", "image"),
    ("no prompt", "gpt-image-1", [("image", PNG)], {}, 400, "missing_required_parameter", "prompt"),
    ("gif", "gpt-image-1", [("image", b"GIF89a" + bytes(64))], {"prompt": "x"}, 400, "invalid_image_format", "image"),
    ("claimed png", "gpt-image-1", [("image", b"not an image at all")], {"prompt": "x"}, 400, "invalid_image_format", "image"),
    ("webp on azure", "gpt-image-1", [("image", image_bytes(fmt="WEBP"))], {"prompt": "x"}, 400, "invalid_image_format", "image"),
    ("17 images", "gpt-image-2", [("image[]", PNG)] * 17, {"prompt": "x"}, 400, "invalid_value", "image[]"),
    ("mask not png", "gpt-image-1", [("image", PNG), ("mask", JPEG)], {"prompt": "x"}, 400, "invalid_image_format", "mask"),
    ("mask no alpha", "gpt-image-1", [("image", PNG), ("mask", image_bytes())], {"prompt": "x"}, 400, "invalid_mask", "mask"),
    ("mask size", "gpt-image-1", [("image", PNG), ("mask", mask_bytes((32, 32)))], {"prompt": "x"}, 400, "invalid_mask", "mask"),
    ("two masks", "gpt-image-1", [("image", PNG), ("mask", mask_bytes()), ("mask", mask_bytes())], {"prompt": "x"}, 400, "invalid_value", "mask"),
    ("fidelity on mini", "gpt-image-1-mini", [("image", PNG)], {"prompt": "x", "input_fidelity": "high"}, 400, "unknown_parameter", "input_fidelity"),
    ("fidelity on 2", "gpt-image-2", [("image", PNG)], {"prompt": "x", "input_fidelity": "low"}, 400, "unknown_parameter", "input_fidelity"),
    ("fidelity value", "gpt-image-1", [("image", PNG)], {"prompt": "x", "input_fidelity": "max"}, 400, "invalid_value", "input_fidelity"),
    ("style", "gpt-image-1", [("image", PNG)], {"prompt": "x", "style": "vivid"}, 400, "unknown_parameter", "style"),
    ("partial-images", "gpt-image-1", [("image", PNG)], {"prompt": "x", "stream": "true", "partial_images": "4"}, 400, "invalid_value", "partial_images"),
    ("n text", "gpt-image-1", [("image", PNG)], {"prompt": "x", "n": "two"}, 400, "invalid_type", "n"),
    ("n over", "gpt-image-1", [("image", PNG)], {"prompt": "x", "n": "11"}, 400, "invalid_value", "n"),
    ("size", "gpt-image-1", [("image", PNG)], {"prompt": "x", "size": "512x512"}, 400, "invalid_value", "size"),
    ("unknown file", "gpt-image-1", [("image", PNG), ("markup", PNG)], {"prompt": "x"}, 400, "unknown_parameter", "markup"),
    ("image as text", "gpt-image-1", [], {"prompt": "x", "image": "inputs/abc.png"}, 400, "invalid_type", "image"),
    ("file too large", "gpt-image-1", [("image", PNG + bytes(5000))], {"prompt": "x"}, 413, "request_too_large", "image"),
]


@pytest.mark.parametrize(("deployment", "files", "fields", "status", "code", "param"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
async def test_multipart_refusals_before_anything_is_stored_or_sent(
    in_process: InProcess, azurite: Azurite, sim: SimControl, deployment: str, files: list[tuple[str, bytes]], fields: dict[str, str], status: int, code: str, param: str
) -> None:
    client, container = await own_container(in_process, IMAGES_MAX_EDIT_FILE_BYTES="4096")
    content, headers = multipart(fields, files)
    response = await client.post(EDITS.format(deployment), content=content, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error.get("param")) == (code, param) and error["message"]
    assert sim.stats()["requests"] == 0
    assert blob_names(azurite, container) == set()


async def test_a_body_over_the_total_limit_is_refused_while_it_streams(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, container = await own_container(in_process, IMAGES_MAX_EDIT_TOTAL_BYTES="20000")
    sent: list[int] = []

    async def body() -> Any:  # chunked (no Content-Length): the count while streaming refuses it
        boundary = "b0und4ry"
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'.encode()
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + PNG
        for _ in range(1000):
            sent.append(1)
            yield bytes(1000)

    response = await client.post(EDITS.format("gpt-image-1"), content=body(), headers={"content-type": "multipart/form-data; boundary=b0und4ry"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert len(sent) < 1000  # refused before the rest was read
    assert sim.stats()["requests"] == 0 and blob_names(azurite, container) == set()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "image": "../../etc/passwd"}, "image"),
        ({"prompt": "x", "image": ["2026-11-25/abc/record.json"]}, "image"),
        ({"prompt": "x", "image": [f"inputs/{'0' * 64}.png"]}, "image"),  # well formed, never stored
        ({"prompt": "x", "image": "2026-11-25/abc/0.png"}, "image"),
        ({"prompt": "x", "image": [f"inputs/{'1' * 64}.png"], "mask": "https://example.com/mask.png"}, "mask"),
        ({"prompt": "x", "image": 7}, "image"),
        ({"prompt": "x"}, "image"),
    ],
)
async def test_json_names_outside_the_archive_are_refused(in_process: InProcess, sim: SimControl, body: dict[str, Any], param: str) -> None:
    client, _ = await own_container(in_process)
    response = await client.post(EDITS.format("gpt-image-1"), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert sim.stats()["requests"] == 0


async def test_an_edit_needs_multipart_or_json(app_client: httpx.AsyncClient, sim: SimControl) -> None:
    response = await app_client.post(EDITS.format("gpt-image-1"), content=b"prompt=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    assert sim.stats()["requests"] == 0


# --- the archive: inputs stored once, edits from archived names ---


async def test_the_same_input_sent_twice_is_stored_once(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    container = f"edits-{uuid.uuid4().hex[:12]}"
    uploads: list[tuple[str, int]] = []

    def on_response(response: Any) -> None:
        http = response.http_request
        if http.method == "PUT" and "/inputs/" in http.url:
            uploads.append((http.headers.get("If-None-Match", ""), response.http_response.status_code))

    client = await in_process(storage_options={"raw_response_hook": on_response}, IMAGES_CONTAINER=container)
    source, mask = image_bytes(colour=BLUE), mask_bytes()
    for prompt in ("first", "second"):
        files = [("image", ("a.png", source, "image/png")), ("mask", ("m.png", mask, "image/png"))]
        response = await client.post(EDITS.format("gpt-image-1"), files=files, data={"prompt": prompt})
        assert response.status_code == 200, response.text
    inputs = {name for name in blob_names(azurite, container) if name.startswith("inputs/")}
    assert inputs == {input_name(azurite, source), input_name(azurite, mask)}
    # Every upload is conditional (If-None-Match: *): the first request's write, the second's refused as present.
    assert sorted(uploads) == [("*", 201), ("*", 201), ("*", 409), ("*", 409)]
    assert sim.stats()["edits"] == 2


async def test_edit_by_archived_name_without_uploading(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, container = await own_container(in_process)
    generated = await client.post("/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview", json={"prompt": "a lamp", "size": "1024x1024"})
    name = archived_name(generated.json()["data"][0]["url"], container)
    # An earlier masked edit archived this mask as an input; now it is named, not sent again.
    mask = mask_bytes((1024, 1024), (0, 0, 100, 100))
    content, headers = multipart({"prompt": "earlier"}, [("image", image_bytes((1024, 1024))), ("mask", mask)])
    assert (await client.post(EDITS.format("gpt-image-1"), content=content, headers=headers)).status_code == 200
    edited = await client.post(EDITS.format("gpt-image-1"), json={"prompt": "a lamp at night", "image": [name], "mask": input_name(azurite, mask), "size": "1024x1024"})
    assert edited.status_code == 200, edited.text
    original = pixels(httpx.get(generated.json()["data"][0]["url"]).content)
    out = pixels(httpx.get(edited.json()["data"][0]["url"]).content)
    assert out.getpixel((50, 50)) == fill_colour("a lamp at night") and out.getpixel((600, 600)) == original.getpixel((600, 600))
    record = record_of(azurite, container, archived_name(edited.json()["data"][0]["url"], container))
    assert record["inputs"] == {"image": [name], "mask": input_name(azurite, mask)}
    assert record["parameters"]["asked"]["image"] == [name]
    assert (await client.get(f"/images/{input_name(azurite, mask)}")).status_code == 302  # inputs have stable links too
    assert sim.stats()["edits"] == 2


async def test_v1_upstream_style_puts_model_in_the_form(in_process: InProcess, sim: SimControl) -> None:
    client, _ = await own_container(in_process, IMAGES_API_STYLE="v1")
    response = await client.post("/openai/v1/images/edits", files=[("image", ("a.png", PNG, "image/png"))], data={"prompt": "x", "model": "images-prod"})
    assert response.status_code == 200, response.text
    call = sim.stats()["recent"][-1]
    assert call["path"] == "/openai/v1/images/edits" and call["body"]["fields"]["model"] == "images-prod"


async def test_server_errors_are_retried_as_for_generations(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, container = await own_container(in_process)
    sim.configure(fail_next=1, fail_status=503)  # unable to handle it: no work, so repeated
    response = await client.post(EDITS.format("gpt-image-1"), files=[("image", ("a.png", PNG, "image/png"))], data={"prompt": "x"})
    assert response.status_code == 200, response.text
    assert sim.stats()["failed"] == 1 and sim.stats()["edits"] == 1
    record = record_of(azurite, container, archived_name(response.json()["data"][0]["url"], container))
    assert record["upstream_attempts"] == 2


async def test_a_failed_edit_leaves_a_failure_record_under_its_request_id_as_a_generation_does(
    in_process: InProcess, azurite: Azurite, sim: SimControl
) -> None:
    client, container = await own_container(in_process)
    flagged = "a shelf [[filter:prompt]]"
    generation = await client.post("/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview", json={"prompt": flagged})
    edit = await client.post(EDITS.format("gpt-image-1"), files=[("image", ("a.png", PNG, "image/png"))], data={"prompt": flagged})
    records = {}
    for kind, response in (("generation", generation), ("edit", edit)):
        assert response.status_code == 400 and response.json()["error"]["code"] == "contentFilter", response.text
        request_id = response.headers["x-request-id"]
        [name] = [n for n in blob_names(azurite, container) if f"/{request_id}/" in n]
        assert name.rsplit("/", 1)[1].startswith("failed-"), name
        client_blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(container, name)
        records[kind] = json.loads(client_blob.download_blob().readall())
        assert records[kind]["id"] == request_id and records[kind]["outcome"] == "filtered"
    assert records["edit"]["operation"] == "edit" and records["edit"]["inputs"] == {"image": [input_name(azurite, PNG)], "mask": None}
    assert set(records["edit"]) - set(records["generation"]) == {"operation", "inputs"}  # the same record, naming its inputs
    assert sim.stats()["requests"] == 2


async def test_openai_upstream_takes_webp_and_the_bearer_key(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, container = await own_container(in_process, IMAGES_API_STYLE="openai")
    webp = image_bytes(colour=GREEN, fmt="WEBP")
    content, headers = multipart({"prompt": "x"}, [("image", webp)])
    response = await client.post(EDITS.format("gpt-image-1"), content=content, headers=headers)
    assert response.status_code == 200, response.text
    call = sim.stats()["recent"][-1]
    assert call["path"] == "/v1/images/edits" and call["body"]["fields"]["model"] == "gpt-image-1"
    assert call["headers"]["authorization"].lower().startswith("bearer") and "api-key" not in call["headers"]
    assert input_name(azurite, webp, "webp") in blob_names(azurite, container)


async def test_the_bytes_decide_the_format_not_the_claim(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, container = await own_container(in_process)
    jpeg = image_bytes(colour=BLUE, fmt="JPEG")
    content, headers = multipart({"prompt": "x"}, [("image", jpeg)])  # sent as f0.png, image/png
    assert (await client.post(EDITS.format("gpt-image-1"), content=content, headers=headers)).status_code == 200
    assert input_name(azurite, jpeg, "jpg") in blob_names(azurite, container)
    [sent] = sim.stats()["recent"][-1]["body"]["files"]
    assert sent["filename"] == "image-0.jpg" and sent["sha256"] == hashlib.sha256(jpeg).hexdigest()  # forwarded untouched


async def test_json_submit_checks_the_names_before_queueing(in_process: InProcess, azurite: Azurite, sim: SimControl) -> None:
    client, _ = await own_container(in_process, IMAGES_QUEUE=f"edits-{uuid.uuid4().hex[:10]}")
    content, headers = multipart({"prompt": "store"}, [("image", PNG)])
    assert (await client.post(EDITS.format("gpt-image-1"), content=content, headers=headers)).status_code == 200
    submit = "/openai/deployments/gpt-image-1/images/edits:submit?api-version=2025-04-01-preview"
    missing = await client.post(submit, json={"prompt": "x", "image": [input_name(azurite, b"never stored")]})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"
    accepted = await client.post(submit, json={"prompt": "x", "image": input_name(azurite, PNG)})
    assert accepted.status_code == 202 and accepted.headers["Operation-Location"]
    v1 = await client.post("/openai/v1/images/edits:submit", json={"model": "gpt-image-2", "prompt": "x", "image": [input_name(azurite, PNG)]})
    assert v1.status_code == 202, v1.text
    assert sim.stats()["edits"] == 1  # only the synchronous edit so far


async def test_the_edit_routes_are_published(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    for path in ("/openai/deployments/{deployment}/images/edits", "/openai/deployments/{deployment}/images/edits:submit", "/openai/v1/images/edits", "/openai/v1/images/edits:submit"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {"image", "image[]", "mask", "prompt"} <= set(content["multipart/form-data"]["schema"]["properties"]), path
        assert {"image", "mask", "prompt"} <= set(content["application/json"]["schema"]["properties"]), path


def test_the_local_demo_edits_the_image_it_generated(api: ServerThread, make_settings: Callable[..., Any], sim: SimControl, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from local.demo_edit import demo_edit
    from local.stack import Stack, demo

    stack = Stack(make_settings(), api, env={})
    generated = demo(stack, tmp_path)
    edited = demo_edit(stack, generated, tmp_path)
    assert edited is not None and edited["record"]["inputs"]["image"] == [generated["name"]]
    assert pixels(edited["saved"].read_bytes()).getpixel((700, 700)) == pixels(generated["saved"].read_bytes()).getpixel((700, 700))
    assert "read from the archive by name" in capsys.readouterr().out
    assert sim.stats()["edits"] == 1
