"""What an image cost: a price table per model family, and the cost of one generation from upstream's ``usage``.

Prices are data, with where they come from and when they were read; they change, so the
record keeps the ``basis`` a cost was computed on. Two ways of pricing:

- token-priced (gpt-image-*): USD per 1M text-input, image-input and image-output tokens.
  ``usage.input_tokens_details`` splits the input into text and image tokens (edits send
  images); every output token of these models is an image token. Gateways that price the
  output as text tokens undercount it by 4-8x.
- per image (dall-e-3): USD per image by size and quality; its answers carry no usage.

A family without a published price (gpt-image-2.5 at the time of writing) costs ``None``
with a basis that says so, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from shared.models import DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_5, GPT_IMAGE_1_MINI, GPT_IMAGE_2

COST_HEADER = "x-images-cost-usd"


@dataclass(frozen=True)
class TokenPrice:
    """USD per 1M tokens."""

    text_input: float
    image_input: float
    image_output: float
    source: str
    checked: str  # when the source was read (YYYY-MM)


@dataclass(frozen=True)
class ImagePrice:
    """USD per image, by (size, quality)."""

    per_image: Mapping[tuple[str, str], float]
    source: str
    checked: str


_OPENAI_MODEL_PAGE = "developers.openai.com/api/docs/models/{} (Azure's price sheet lists the same per-1M figures for Global Standard)"
_UPSTREAM_NOTES = "project notes shared/UPSTREAM.md (published per-1M prices, 2026); Azure's price sheet not reachable from here"

PRICES: Mapping[str, TokenPrice | ImagePrice] = MappingProxyType(
    {
        GPT_IMAGE_1: TokenPrice(5.0, 10.0, 40.0, _OPENAI_MODEL_PAGE.format(GPT_IMAGE_1), "2026-11"),
        GPT_IMAGE_1_MINI: TokenPrice(2.0, 2.5, 8.0, _OPENAI_MODEL_PAGE.format(GPT_IMAGE_1_MINI), "2026-11"),
        GPT_IMAGE_1_5: TokenPrice(5.0, 8.0, 32.0, _UPSTREAM_NOTES, "2026-11"),
        GPT_IMAGE_2: TokenPrice(5.0, 8.0, 30.0, _UPSTREAM_NOTES, "2026-11"),
        DALL_E_3: ImagePrice(
            MappingProxyType(
                {
                    ("1024x1024", "standard"): 0.04,
                    ("1792x1024", "standard"): 0.08,
                    ("1024x1792", "standard"): 0.08,
                    ("1024x1024", "hd"): 0.08,
                    ("1792x1024", "hd"): 0.12,
                    ("1024x1792", "hd"): 0.12,
                }
            ),
            "OpenAI's DALL-E 3 price table (per image, by size and quality; Azure bills the same per 100 images)",
            "2026-11",
        ),
    }
)

_PER_MILLION = 1_000_000


def _count(value: Any) -> int:
    """A token count from upstream's JSON; anything else counts as 0 (a malformed usage never fails a paid image)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def token_cost(price: TokenPrice, usage: Mapping[str, Any]) -> float:
    """USD for one answer's ``usage``: input split into text and image tokens, output priced as image tokens."""
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    input_tokens = _count(usage.get("input_tokens"))
    image_in = _count(details.get("image_tokens"))
    # Without the split, everything that is not an image token is text.
    text_in = _count(details.get("text_tokens")) if "text_tokens" in details else max(0, input_tokens - image_in)
    output = _count(usage.get("output_tokens"))
    return (text_in * price.text_input + image_in * price.image_input + output * price.image_output) / _PER_MILLION


def cost(family: str, usage: Mapping[str, Any] | None, sent: Mapping[str, Any], images: int) -> dict[str, Any]:
    """``{"usd": float | None, "basis": str}`` for one generation of ``family``.

    ``usage`` is upstream's; ``sent`` is the body sent upstream (size and quality price a
    per-image family); ``images`` is how many came back.
    """
    price = PRICES.get(family)
    if isinstance(price, TokenPrice):
        if not usage:
            return {"usd": None, "basis": f"{family}: upstream sent no usage to price"}
        basis = f"{family} per 1M tokens: text in {price.text_input:g}, image in {price.image_input:g}, image out {price.image_output:g} USD ({price.checked})"
        return {"usd": round(token_cost(price, usage), 6), "basis": basis}
    if isinstance(price, ImagePrice):
        size, quality = str(sent.get("size") or "1024x1024"), str(sent.get("quality") or "standard")
        each = price.per_image.get((size, quality))
        if each is None:
            return {"usd": None, "basis": f"{family}: no price for size {size}, quality {quality}"}
        return {"usd": round(each * images, 6), "basis": f"{family} per image ({size}, {quality}): {each:g} USD ({price.checked})"}
    return {"usd": None, "basis": f"{family}: no published price in this service's table"}


def cost_header(record: Mapping[str, Any]) -> dict[str, str]:
    """The synchronous answer's ``x-images-cost-usd`` header, when the cost is known."""
    usd = (record.get("cost") or {}).get("usd")
    return {COST_HEADER: f"{usd:.6f}"} if isinstance(usd, int | float) else {}
