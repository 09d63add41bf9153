"""The simulator's edits endpoint over real HTTP: Azure's rules and errors, billing, and outputs made from the inputs."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from local.sim_edits import fill_colour
from tests.conftest import SIM_KEY, SimControl
from tests.test_edits import BLUE, GREEN, RED, image_bytes, mask_bytes, multipart

AZURE = "/openai/deployments/{}/images/edits?api-version=2025-04-01-preview"
PNG = image_bytes()


def post(sim: SimControl, path: str, fields: dict[str, str], files: list[tuple[str, bytes]], key: str = SIM_KEY) -> httpx.Response:
    content, headers = multipart(fields, files)
    return httpx.post(f"{sim.url}{path}", content=content, headers={**headers, "api-key": key}, timeout=30)


def output(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"]))).convert("RGB")


@pytest.mark.parametrize(
    ("deployment", "fields", "files", "status", "code", "param"),
    [
        ("gpt-image-1", {"prompt": "x"}, [("image", PNG), ("mask", mask_bytes((10, 10)))], 400, "invalid_mask_image", "mask"),
        ("gpt-image-1", {"prompt": "x"}, [("image", PNG), ("mask", image_bytes())], 400, "invalid_mask_image", "mask"),
        ("gpt-image-1", {"prompt": "x"}, [("image", b"GIF89a" + bytes(64))], 400, "invalid_image_format", "image"),
        ("gpt-image-1", {"prompt": "x"}, [("image", image_bytes(fmt="WEBP"))], 400, "invalid_image_format", "image"),
        ("gpt-image-1", {"prompt": "x"}, [("image[]", PNG)] * 17, 400, "array_above_max_length", "image"),
        ("gpt-image-1", {"prompt": "x", "colour": "red"}, [("image", PNG)], 400, "unknown_parameter", "colour"),
        ("gpt-image-1-mini", {"prompt": "x", "input_fidelity": "high"}, [("image", PNG)], 400, "unknown_parameter", "input_fidelity"),
        ("gpt-image-1", {"prompt": "x"}, [("markup", PNG)], 400, "unknown_parameter", "markup"),
        ("gpt-image-1", {"prompt": "x"}, [], 400, "missing_required_parameter", "image"),
        ("dall-e-3", {"prompt": "x"}, [("image", PNG)], 400, "OperationNotSupported", None),
        ("nope", {"prompt": "x"}, [("image", PNG)], 404, "DeploymentNotFound", None),
    ],
)
def test_azure_rules_and_errors(sim: SimControl, deployment: str, fields: dict[str, str], files: list[tuple[str, bytes]], status: int, code: str, param: str | None) -> None:
    response = post(sim, AZURE.format(deployment), fields, files)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error.get("param") == param
    stats = sim.stats()
    assert stats["requests"] == 1 and stats["edits"] == stats["generations"] == 0  # refused, not billed


def test_the_output_is_made_from_the_inputs(sim: SimControl) -> None:
    prompt = "paint the corner"
    response = post(sim, AZURE.format("gpt-image-1"), {"prompt": prompt, "input_fidelity": "low"}, [("image[]", image_bytes(colour=RED)), ("image[]", image_bytes(colour=BLUE)), ("mask", mask_bytes())])
    image = output(response)
    assert image.getpixel((5, 5)) == fill_colour(prompt)
    assert image.getpixel((40, 20)) == RED
    assert image.getpixel((4, 45)) == BLUE
    stats = sim.stats()
    assert (stats["edits"], stats["generations"], stats["succeeded"]) == (1, 1, 1)
    assert stats["recent"][-1]["body"]["fields"] == {"prompt": prompt, "input_fidelity": "low"}


def test_openai_path_takes_webp_and_a_bearer_key(sim: SimControl) -> None:
    content, headers = multipart({"prompt": "x", "model": "gpt-image-1"}, [("image", image_bytes(colour=GREEN, fmt="WEBP"))])
    response = httpx.post(f"{sim.url}/v1/images/edits", content=content, headers={**headers, "Authorization": f"Bearer {SIM_KEY}"}, timeout=30)
    assert output(response).getpixel((30, 30))[1] > 150
    assert "content_filter_results" not in response.json()["data"][0]  # OpenAI's answer has none


def test_edits_share_quota_auth_and_faults(sim: SimControl) -> None:
    assert post(sim, AZURE.format("gpt-image-1"), {"prompt": "x"}, [("image", PNG)], key="wrong").status_code == 401
    sim.configure(fail_next=1)
    assert post(sim, AZURE.format("gpt-image-1"), {"prompt": "x"}, [("image", PNG)]).status_code == 500
    sim.configure(quota_requests=1, quota_window_seconds=60)
    assert post(sim, AZURE.format("gpt-image-1"), {"prompt": "x"}, [("image", PNG)]).status_code == 200
    throttled = post(sim, AZURE.format("gpt-image-1"), {"prompt": "x"}, [("image", PNG)])
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    stats = sim.stats()
    assert (stats["unauthorized"], stats["failed"], stats["throttled"], stats["edits"]) == (1, 1, 1, 1)
