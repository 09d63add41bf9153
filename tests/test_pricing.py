"""The cost of every image: computed from the simulator's usage for each family, and matching the price table."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from local.simulator import render_image
from shared.callers import key_caller
from shared.pricing import COST_HEADER, PRICES, ImagePrice, TokenPrice, cost, cost_header, token_cost
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

API = "?api-version=2025-04-01-preview"
TOKEN_FAMILIES = ["gpt-image-1-mini", "gpt-image-1", "gpt-image-1.5", "gpt-image-2"]


def by_table(family: str, usage: dict[str, Any]) -> float:
    """The table read by hand: text in, image in, and every output token an image token."""
    price = PRICES[family]
    assert isinstance(price, TokenPrice)
    details = usage["input_tokens_details"]
    return (details["text_tokens"] * price.text_input + details["image_tokens"] * price.image_input + usage["output_tokens"] * price.image_output) / 1e6


@pytest.mark.parametrize("family", TOKEN_FAMILIES)
async def test_a_token_priced_image_costs_what_its_usage_says(app_client: httpx.AsyncClient, family: str) -> None:
    response = await app_client.post(f"/openai/deployments/{family}/images/generations{API}", json={"prompt": "a red kite", "quality": "high", "size": "1024x1024"})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["output_tokens"] > 1000  # the simulator bills high quality as upstream does
    assert float(response.headers[COST_HEADER]) == pytest.approx(by_table(family, usage), abs=1e-6)


async def test_an_edit_costs_what_its_usage_says(app_client: httpx.AsyncClient) -> None:
    png = render_image(64, 48)
    response = await app_client.post(
        f"/openai/deployments/gpt-image-1.5/images/edits{API}", files=[("image", ("a.png", png, "image/png"))], data={"prompt": "a red kite"}
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["input_tokens_details"]["image_tokens"] > 0  # the input image is billed as image tokens
    assert float(response.headers[COST_HEADER]) == pytest.approx(by_table("gpt-image-1.5", usage), abs=1e-6)


async def test_a_per_image_family_costs_its_row(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post(f"/openai/deployments/dall-e-3/images/generations{API}", json={"prompt": "a red kite", "quality": "hd", "size": "1792x1024"})
    assert response.status_code == 200, response.text
    assert "usage" not in response.json()  # dall-e-3 answers carry none: the size and quality price it
    assert response.headers[COST_HEADER] == "0.120000"


async def test_a_job_result_and_its_record_carry_the_cost(sim: SimControl, make_settings: Callable[..., Settings]) -> None:
    job_id = f"cost-{uuid.uuid4().hex[:8]}"
    async with Runtime(make_settings()) as runtime:
        outcome = await runtime.jobs.handle(json.dumps({"id": job_id, "deployment": "gpt-image-2", "prompt": "a red kite", "quality": "low"}), "m-1", 1)
        assert outcome.action == "succeeded", outcome.detail
        status = await runtime.jobs.status(job_id, key_caller())
        record = await runtime.service.archive.read_record("jobs", job_id)
    assert status is not None and record is not None
    assert status["result"]["cost"] == record["cost"]
    assert record["cost"]["usd"] == pytest.approx(by_table("gpt-image-2", record["usage"]), abs=1e-6)
    assert record["backend_attempts"] == {record["backend"]: 1}


def test_image_input_tokens_are_priced_as_image_tokens_and_output_as_image_output() -> None:
    usage = {"input_tokens": 1300, "input_tokens_details": {"text_tokens": 300, "image_tokens": 1000}, "output_tokens": 4160}
    price = PRICES["gpt-image-2"]
    assert isinstance(price, TokenPrice)
    assert token_cost(price, usage) == pytest.approx((300 * 5 + 1000 * 8 + 4160 * 30) / 1e6)
    # Without the split, input tokens that are not said to be image tokens are text.
    assert token_cost(price, {"input_tokens": 50, "output_tokens": 272}) == pytest.approx((50 * 5 + 272 * 30) / 1e6)


# The published per-1M figures (text in, image in, image out, text out), read 2026-11: OpenAI's model
# pages, and Azure's Global Standard meters, which bill the same. A change here is a price change.
PUBLISHED = {
    "gpt-image-1": (5.0, 10.0, 40.0, None),
    "gpt-image-1-mini": (2.0, 2.5, 8.0, None),
    "gpt-image-1.5": (5.0, 8.0, 32.0, 10.0),
    "gpt-image-2": (5.0, 8.0, 30.0, None),
}


@pytest.mark.parametrize("family", TOKEN_FAMILIES)
def test_the_table_holds_the_published_prices(family: str) -> None:
    price = PRICES[family]
    assert isinstance(price, TokenPrice)
    assert (price.text_input, price.image_input, price.image_output, price.text_output) == PUBLISHED[family]
    assert price.checked == "2026-11" and "UPSTREAM.md" not in price.source  # read from public pages, not the notes


def test_dall_e_3_holds_the_published_per_image_prices() -> None:
    price = PRICES["dall-e-3"]
    assert isinstance(price, ImagePrice)
    assert dict(price.per_image) == {
        ("1024x1024", "standard"): 0.04, ("1792x1024", "standard"): 0.08, ("1024x1792", "standard"): 0.08,
        ("1024x1024", "hd"): 0.08, ("1792x1024", "hd"): 0.12, ("1024x1792", "hd"): 0.12,
    }


def test_gpt_image_1_5_text_output_costs_its_own_price_and_the_rest_is_image_output() -> None:
    usage = {"input_tokens": 357, "input_tokens_details": {"text_tokens": 34, "image_tokens": 323},
             "output_tokens": 6543, "output_tokens_details": {"text_tokens": 335, "image_tokens": 6208}}
    price = PRICES["gpt-image-1.5"]
    assert isinstance(price, TokenPrice)
    assert token_cost(price, usage) == pytest.approx((34 * 5 + 323 * 8 + 6208 * 32 + 335 * 10) / 1e6)
    assert "text out 10" in cost("gpt-image-1.5", usage, {}, 1)["basis"]
    # A family without a published text-output price prices every output token as an image token.
    two = PRICES["gpt-image-2"]
    assert isinstance(two, TokenPrice)
    assert token_cost(two, usage) == pytest.approx((34 * 5 + 323 * 8 + 6543 * 30) / 1e6)
    # A text count that is not a count, or more than the output, never makes the cost negative or fails.
    for text in ("335", -1, 10**9):
        odd = {**usage, "output_tokens_details": {"text_tokens": text}}
        assert token_cost(price, odd) >= (34 * 5 + 323 * 8) / 1e6


def test_what_is_not_in_the_table_costs_none_with_a_reason_never_zero() -> None:
    unknown = cost("gpt-image-2.5-flare", {"input_tokens": 10, "output_tokens": 10}, {}, 1)
    assert unknown["usd"] is None and "no published price" in unknown["basis"]
    assert cost("gpt-image-2", None, {}, 1)["usd"] is None
    assert cost("dall-e-3", None, {"size": "512x512", "quality": "hd"}, 1)["usd"] is None
    assert cost_header({"cost": unknown}) == {}


def test_every_price_says_where_it_comes_from_and_when() -> None:
    for family, price in PRICES.items():
        assert price.source and price.checked[:2] == "20", family
        if isinstance(price, ImagePrice):
            assert all(v > 0 for v in price.per_image.values())
        else:
            assert price.image_output > price.text_input > 0  # output image tokens are the expensive ones
