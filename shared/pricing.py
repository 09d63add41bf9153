"""What an image cost: a price table per model family, and the cost of one generation from upstream's ``usage``.

Prices are data, with where they come from and when they were read; they change, so the
record keeps the ``basis`` a cost was computed on. Two ways of pricing:

- token-priced (gpt-image-*): USD per 1M text-input, image-input and image-output tokens.
  ``usage.input_tokens_details`` splits the input into text and image tokens (edits send
  images). The output is priced as image tokens (gateways that price it as text tokens
  undercount it by 4-8x); gpt-image-1.5 alone also publishes a text-output price, and when
  ``usage.output_tokens_details`` says how many output tokens were text, those cost that.
- per image (dall-e-3): USD per image by size and quality; its answers carry no usage.

The figures are OpenAI's list prices, which Azure's Global Standard deployments bill too.
Not modelled: Data Zone (and Regional) deployments bill about 10% more (Azure's image-input
meters: gpt-image-1 11 against 10, gpt-image-1.5 8.8 against 8), and cached input tokens are
cheaper (text 1.25, image 2-2.5 per 1M on the full-size models) but the usage this service
sees does not count them, so a cost is the Global Standard, uncached figure.

A family without a published price (gpt-image-2.5 at the time of writing) costs ``None``
with a basis that says so, never 0.

Before a call, :func:`worst_case` bounds what it can cost, for a caller's budget
(shared/callers): the most the request may produce, from what is sent and its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from shared.models import DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_5, GPT_IMAGE_1_MINI, GPT_IMAGE_2, rules_of

COST_HEADER = "x-images-cost-usd"


@dataclass(frozen=True)
class TokenPrice:
    """USD per 1M tokens."""

    text_input: float
    image_input: float
    image_output: float
    source: str
    checked: str  # when the source was read (YYYY-MM)
    text_output: float | None = None  # only where a text-output price is published (gpt-image-1.5)


@dataclass(frozen=True)
class ImagePrice:
    """USD per image, by (size, quality)."""

    per_image: Mapping[tuple[str, str], float]
    source: str
    checked: str


_AZURE_SAME = "Azure Global Standard bills the same"
_SOURCES = {
    GPT_IMAGE_1: (
        "developers.openai.com/api/docs/models/gpt-image-1 (read in its ja-JP copy): text in 5.00 (cached 1.25), "
        "image in 10.00 (cached 2.50), image out 40.00 per 1M. " + _AZURE_SAME + " (LiteLLM azure/gpt-image-1); "
        "Data Zone and Regional image in 11 (jamesmcroft/openai-image-token-calculator)"
    ),
    GPT_IMAGE_1_MINI: (
        "developers.openai.com/api/docs/models/gpt-image-1-mini (read in its de-DE copy): text in 2.00 (cached 0.20), "
        "image in 2.50 (cached 0.25), image out 8.00 per 1M. " + _AZURE_SAME + " (LiteLLM azure/gpt-image-1-mini)"
    ),
    GPT_IMAGE_1_5: (
        "developers.openai.com/api/docs/models/gpt-image-1.5 as quoted by pydantic/genai-prices (checked 2026-07-22) and "
        "simonw/llm-prices#41 (openai.com/api/pricing): text in 5 (cached 1.25), image in 8 (cached 2), image out 32, "
        "text out 10 per 1M. " + _AZURE_SAME + " (BerriAI/litellm#18347; text out from Azure's retail price API, "
        "BerriAI/litellm#37081); Data Zone image in 8.8 (jamesmcroft/openai-image-token-calculator)"
    ),
    GPT_IMAGE_2: (
        "developers.openai.com/api/docs/models/gpt-image-2 as quoted by pydantic/genai-prices (checked 2026-07-22) and "
        "BerriAI/litellm#26866 (with azure.microsoft.com/pricing/details/cognitive-services/openai-service): text in 5 "
        "(cached 1.25), image in 8 (cached 2), image out 30 per 1M, no text-output price. " + _AZURE_SAME + "; "
        "no Data Zone price found"
    ),
}

PRICES: Mapping[str, TokenPrice | ImagePrice] = MappingProxyType(
    {
        GPT_IMAGE_1: TokenPrice(5.0, 10.0, 40.0, _SOURCES[GPT_IMAGE_1], "2026-11"),
        GPT_IMAGE_1_MINI: TokenPrice(2.0, 2.5, 8.0, _SOURCES[GPT_IMAGE_1_MINI], "2026-11"),
        GPT_IMAGE_1_5: TokenPrice(5.0, 8.0, 32.0, _SOURCES[GPT_IMAGE_1_5], "2026-11", text_output=10.0),
        GPT_IMAGE_2: TokenPrice(5.0, 8.0, 30.0, _SOURCES[GPT_IMAGE_2], "2026-11"),
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
            "OpenAI's DALL-E 3 per-image table (openai.com/pricing; developers.openai.com/api/docs/models/dall-e-3 shows "
            "no price since the model was retired); Azure the same per image (LiteLLM azure/<quality>/<size>/dall-e-3)",
            "2026-11",
        ),
    }
)

_PER_MILLION = 1_000_000


def _count(value: Any) -> int:
    """A token count from upstream's JSON; anything else counts as 0 (a malformed usage never fails a paid image)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def token_cost(price: TokenPrice, usage: Mapping[str, Any]) -> float:
    """USD for one answer's ``usage``: input split into text and image tokens, output priced as image tokens.

    Output tokens that ``output_tokens_details`` says are text cost ``price.text_output`` where
    one is published; without it every output token is an image token.
    """
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    input_tokens = _count(usage.get("input_tokens"))
    image_in = _count(details.get("image_tokens"))
    # Without the split, everything that is not an image token is text.
    text_in = _count(details.get("text_tokens")) if "text_tokens" in details else max(0, input_tokens - image_in)
    output = _count(usage.get("output_tokens"))
    text_out = 0
    if price.text_output is not None:
        out_details = usage.get("output_tokens_details")
        text_out = min(output, _count(out_details.get("text_tokens"))) if isinstance(out_details, dict) else 0
    text_out_usd = text_out * (price.text_output or 0.0)
    usd = text_in * price.text_input + image_in * price.image_input + (output - text_out) * price.image_output + text_out_usd
    return usd / _PER_MILLION


def cost(family: str, usage: Mapping[str, Any] | None, sent: Mapping[str, Any], images: int) -> dict[str, Any]:
    """``{"usd": float | None, "basis": str}`` for one generation of ``family``.

    ``usage`` is upstream's; ``sent`` is the body sent upstream (size and quality price a
    per-image family); ``images`` is how many came back.
    """
    price = PRICES.get(family)
    if isinstance(price, TokenPrice):
        if not usage:
            return {"usd": None, "basis": f"{family}: upstream sent no usage to price"}
        text_out = f", text out {price.text_output:g}" if price.text_output is not None else ""
        basis = (
            f"{family} per 1M tokens: text in {price.text_input:g}, image in {price.image_input:g}, "
            f"image out {price.image_output:g}{text_out} USD ({price.checked})"
        )
        return {"usd": round(token_cost(price, usage), 6), "basis": basis}
    if isinstance(price, ImagePrice):
        size, quality = str(sent.get("size") or "1024x1024"), str(sent.get("quality") or "standard")
        each = price.per_image.get((size, quality))
        if each is None:
            return {"usd": None, "basis": f"{family}: no price for size {size}, quality {quality}"}
        return {
            "usd": round(each * images, 6),
            "basis": f"{family} per image ({size}, {quality}): {each:g} USD ({price.checked})",
        }
    return {"usd": None, "basis": f"{family}: no published price in this service's table"}


# OpenAI's image generation guide (Streaming): each partial image costs 100 more image output tokens.
PARTIAL_IMAGE_OUTPUT_TOKENS = 100


def streamed_cost(family: str, usage: Mapping[str, Any] | None, sent: Mapping[str, Any], partial_images: int) -> dict[str, Any]:
    """:func:`cost` of a streamed image, with :data:`PARTIAL_IMAGE_OUTPUT_TOKENS` image output tokens per partial image sent.

    Upstream's usage is taken to count the final image only (the published rule prices partial images on top)."""
    priced = cost(family, usage, sent, 1)
    price = PRICES.get(family)
    if not partial_images or not isinstance(price, TokenPrice) or priced["usd"] is None:
        return priced
    extra = partial_images * PARTIAL_IMAGE_OUTPUT_TOKENS
    usd = priced["usd"] + extra * price.image_output / _PER_MILLION
    return {"usd": round(usd, 6), "basis": f"{priced['basis']}; {partial_images} partial images x {PARTIAL_IMAGE_OUTPUT_TOKENS} image output tokens"}


def recorded_usd(record: Mapping[str, Any]) -> float | None:
    """The cost in USD a record carries (``record["cost"]["usd"]``, as :func:`cost` wrote it), or None when unknown."""
    recorded = record.get("cost")
    usd = recorded.get("usd") if isinstance(recorded, Mapping) else None
    return float(usd) if isinstance(usd, int | float) and not isinstance(usd, bool) else None


def cost_header(record: Mapping[str, Any]) -> dict[str, str]:
    """The synchronous answer's ``x-images-cost-usd`` header, when the cost is known."""
    usd = (record.get("cost") or {}).get("usd")
    return {COST_HEADER: f"{usd:.6f}"} if isinstance(usd, int | float) else {}


# --- the worst case, before the call ------------------------------------------------------------

# Image-output tokens per 1024x1024 of output at each quality: OpenAI's table for the gpt-image-1
# family (272 / 1056 / 4160; 1024x1536 costs 1.5 times as many), taken per pixel for every size and
# for gpt-image-2, whose own table is not published; ``auto`` may choose high.
OUTPUT_TOKENS_PER_MEGAPIXEL = MappingProxyType({"low": 272, "medium": 1056, "high": 4160, "auto": 4160})
# An input image (an edit's, and its mask) read at high fidelity: OpenAI quotes about 3,050 tokens
# for 1024x1024 at high fidelity and 135 at low; this bound takes the output rate (4,160 per 1024x1024)
# and the vision rule that scales an input to fit 2048x2048 first.
INPUT_TOKENS_PER_MEGAPIXEL = 4160
INPUT_BASE_TOKENS = 65
INPUT_MAX_PIXELS = 2048 * 2048
_MEGAPIXEL = 1024 * 1024


def worst_case(family: str, sent: Mapping[str, Any], input_pixels: Sequence[int] = ()) -> float | None:
    """The most (USD) the request ``sent`` upstream may cost, with edit inputs of ``input_pixels`` each; None
    when the family has no price. Settled afterwards from upstream's usage (:func:`cost`).

    Text tokens are bounded by the prompt's UTF-8 bytes (a token is at least a byte); ``quality``
    absent or ``auto`` is priced as high; ``size`` absent or ``auto`` as the largest the family makes."""
    price = PRICES.get(family)
    n = _count(sent.get("n")) or 1
    if isinstance(price, ImagePrice):
        each = price.per_image.get((str(sent.get("size") or "1024x1024"), str(sent.get("quality") or "standard")))
        return None if each is None else round(each * n, 6)
    if not isinstance(price, TokenPrice):
        return None
    quality = str(sent.get("quality") or "auto")
    per_image = OUTPUT_TOKENS_PER_MEGAPIXEL.get(quality, OUTPUT_TOKENS_PER_MEGAPIXEL["high"]) * _pixels(family, sent.get("size")) / _MEGAPIXEL
    output = n * (math.ceil(per_image) + PARTIAL_IMAGE_OUTPUT_TOKENS * _count(sent.get("partial_images")))
    text = len(str(sent.get("prompt") or "").encode("utf-8"))
    images = sum(INPUT_BASE_TOKENS + math.ceil(INPUT_TOKENS_PER_MEGAPIXEL * min(px, INPUT_MAX_PIXELS) / _MEGAPIXEL) for px in input_pixels)
    usd = text * price.text_input + images * price.image_input + output * price.image_output
    return round(usd / _PER_MILLION, 6)


def _pixels(family: str, size: Any) -> int:
    """The pixels of ``WxH``; for ``auto`` (or nothing), the most the family's rules allow."""
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit():
            return int(width) * int(height)
    rules = rules_of(family)
    listed = [int(w) * int(h) for w, _, h in (s.partition("x") for s in rules.sizes) if w.isdigit() and h.isdigit()]
    return max([*listed, rules.size_rule.max_pixels if rules.size_rule else 0])
