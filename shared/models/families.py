"""Model families as data: one row per family, with its request rules, lifecycle, IaC version and quota.

Adding a family is adding a row to ``TABLE``. Everything else is derived from the rows:
the families the service accepts (``FAMILIES``, which shared/settings.py offers in
``IMAGES_DEPLOYMENTS``), the request rules :func:`shared.models.parse_request` applies,
the model versions the Bicep and Terraform templates deploy (``iac_versions``; tests keep
the templates' tables equal to it) and the README's model table (tested against the rows).

Lifecycle dates are Azure's, not OpenAI's: the deployment belongs to the customer and Azure
decides when it stops answering. Where the sources disagree or say nothing, ``notes`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from types import MappingProxyType
from typing import Literal

DALL_E_3 = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_1_MINI = "gpt-image-1-mini"
GPT_IMAGE_1_5 = "gpt-image-1.5"
GPT_IMAGE_2 = "gpt-image-2"
GPT_IMAGE_2_5_FLARE = "gpt-image-2.5-flare"
GPT_IMAGE_2_5_SUNBURST = "gpt-image-2.5-sunburst"

# The model the templates deploy when nobody chooses one.
IAC_DEFAULT_MODEL = GPT_IMAGE_2

# Fields every family accepts. style and response_format are DALL-E 3 words, kept for
# every family because seed-style clients send them to gpt-image deployments too.
COMMON_FIELDS = frozenset({"prompt", "size", "n", "quality", "style", "response_format", "user", "model"})
GPT_IMAGE_FIELDS = COMMON_FIELDS | {"output_format", "output_compression", "background", "moderation"}
# Fields of a family that streams partial images (Rules.partial_images).
STREAM_FIELDS = frozenset({"stream", "partial_images"})

Api = Literal["dall-e", "gpt-image"]
# "openai-only": published by OpenAI (api.openai.com) and not listed by Azure yet.
Status = Literal["openai-only", "preview", "ga"]

# When the rows were last checked against Azure's retirement schedule and quota tables.
CHECKED = date(2026, 12, 6)


@dataclass(frozen=True)
class SizeRule:
    """Free sizes WIDTHxHEIGHT within limits (gpt-image-2), instead of a fixed list."""

    edge_multiple: int
    max_edge_exclusive: int
    max_ratio: int
    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class Rules:
    """What a request to a family may hold; checked before anything goes upstream."""

    api: Api  # "dall-e": sent as given (style included); "gpt-image": translated, always base64
    fields: frozenset[str]  # the parameters that exist for this family
    prompt_max_chars: int
    sizes: tuple[str, ...]  # accepted as given
    max_n: int
    qualities: tuple[str, ...]
    size_rule: SizeRule | None = None  # free sizes within limits, besides ``sizes``
    seed_sizes: Mapping[str, str] = field(default_factory=dict)  # DALL-E 3 sizes -> nearest size here
    seed_qualities: Mapping[str, str] = field(default_factory=dict)  # DALL-E 3 qualities -> qualities here
    styles: tuple[str, ...] = ("vivid", "natural")  # accepted; sent for dall-e, recorded and dropped for gpt-image
    output_formats: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ()
    moderations: tuple[str, ...] = ()
    # ``stream: true`` answers server-sent events with partial_images in this range (inclusive);
    # None: the family does not stream, and ``stream`` and ``partial_images`` are not among its fields.
    partial_images: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if (self.partial_images is not None) != bool(STREAM_FIELDS & self.fields):
            raise ValueError("a family streams (partial_images) exactly when stream and partial_images are among its fields")


@dataclass(frozen=True)
class EditRules:
    """What an edit (``POST .../images/edits``) may hold; the generation ``Rules`` apply to its other fields."""

    fields: frozenset[str]  # the parameters an edit may carry (files and form fields)
    input_formats: tuple[str, ...] = ("png", "jpeg")  # Azure documents PNG and JPG inputs
    openai_input_formats: tuple[str, ...] = ("png", "jpeg", "webp")  # OpenAI's API also takes WEBP
    max_images: int = 16
    input_fidelities: tuple[str, ...] = ()  # empty: the family has no input_fidelity


@dataclass(frozen=True)
class Family:
    """One model family: its rules, its lifecycle on Azure, what the templates deploy, its default quota."""

    name: str
    rules: Rules | None  # None: not on Azure (OpenAI only), rules not published for Azure; the service does not accept it yet
    status: Status  # as released; dates below decide "no new customers" and "retired" on a given day
    no_new_customers: date | None  # Azure's deprecation date: existing deployments keep working
    retires: date | None  # Azure's retirement date: deployments answer errors from then on
    successor: str | None
    version: str | None  # Azure's model version string (deployment model.version)
    in_templates: bool  # offered by infra/ (Bicep imageModelName, Terraform image_model_name)
    registration: bool  # Azure asks for a limited-access registration before the first deployment
    requests_per_minute: Mapping[str, int]  # default (tier 1) quota per deployment type (SKU)
    notes: str = ""
    sources: tuple[str, ...] = ()
    edits: EditRules | None = None  # None: the family does not edit images (dall-e-3 on Azure, OpenAI-only rows)


_SEED_SIZES = MappingProxyType({"1792x1024": "1536x1024", "1024x1792": "1024x1536"})
_SEED_QUALITIES = MappingProxyType({"hd": "high", "standard": "medium"})

_DALL_E_3_RULES = Rules(
    api="dall-e",
    fields=COMMON_FIELDS,
    prompt_max_chars=4000,
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    max_n=1,
    qualities=("standard", "hd"),
)
# gpt-image-1, -1-mini and -1.5 share one set of rules. Streaming with partial_images 0-3: Learn's
# image how-to (Streaming) and OpenAI's image generation guide, for the gpt-image-1 series and gpt-image-2,
# generations and edits alike.
_GPT_IMAGE_1_RULES = Rules(
    api="gpt-image",
    fields=GPT_IMAGE_FIELDS | STREAM_FIELDS,
    prompt_max_chars=32000,
    sizes=("1024x1024", "1536x1024", "1024x1536", "auto"),
    max_n=10,
    qualities=("low", "medium", "high", "auto"),
    # The seed's wide and tall sizes do not exist here; the nearest size with the same
    # orientation keeps DALL-E 3 clients working instead of refusing them.
    seed_sizes=_SEED_SIZES,
    seed_qualities=_SEED_QUALITIES,
    output_formats=("png", "jpeg"),
    backgrounds=("auto", "opaque", "transparent"),
    moderations=("auto", "low"),
    partial_images=(0, 3),
)
# gpt-image-2 differs in sizes only: free sizes within limits, so the seed's sizes fit as they are.
_GPT_IMAGE_2_RULES = replace(
    _GPT_IMAGE_1_RULES,
    sizes=("auto",),
    size_rule=SizeRule(edge_multiple=16, max_edge_exclusive=3840, max_ratio=3, min_pixels=655_360, max_pixels=8_294_400),
    seed_sizes=MappingProxyType({}),
)

# Edits share prompt, n, size, quality, output_format, output_compression, background, user, model and
# response_format with generations; style and moderation are not edit parameters. stream and
# partial_images follow the family's Rules.partial_images, as for generations.
# Sources: Learn's API reference (Image generations - Edit: each image png or jpg, the mask a png of the
# image's size), Azure's SDK reference for InputFidelity (not gpt-image-1-mini) and OpenAI's images/edits
# reference (png, webp or jpg under 50 MB, up to 16 images; omit input_fidelity for gpt-image-2, which reads
# every input at high fidelity).
_EDIT_FIELDS = frozenset(
    {"prompt", "image", "mask", "n", "size", "quality", "output_format", "output_compression", "background", "user", "model", "response_format", "stream", "partial_images"}
)
_EDITS = EditRules(fields=_EDIT_FIELDS)
_EDITS_WITH_FIDELITY = EditRules(fields=_EDIT_FIELDS | {"input_fidelity"}, input_fidelities=("low", "high"))

_LEARN_RETIREMENTS = "learn.microsoft.com/azure/ai-foundry/openai/concepts/model-retirements (image table, 2025-12 and 2026-01)"
_SCHEDULE_2026_09 = "Azure's model retirement schedule of 2026-09 (image models), as recorded in the project's UPSTREAM.md; checked 2026-12-06"
_LEARN_IMAGE_HOWTO = "learn.microsoft.com/azure/ai-foundry/openai/how-to/dall-e (models table, registration links)"
_LEARN_QUOTAS = "learn.microsoft.com/azure/foundry/openai/quotas-limits (default image quotas, quota tier 1)"
_ISSUE_11 = "issue 11 (tier-1 figures not found in a source checked)"

TABLE: tuple[Family, ...] = (
    Family(
        name=DALL_E_3,
        rules=_DALL_E_3_RULES,
        status="ga",
        no_new_customers=None,
        retires=date(2026, 3, 4),
        successor=GPT_IMAGE_2,
        version="3.0",
        in_templates=False,
        registration=False,
        requests_per_minute=MappingProxyType({"Standard": 6}),
        notes=(
            "The seed's model. Learn's retirement table of 2025-12 said 2026-02-18 (replacement gpt-image-1-mini); "
            "the how-to later says 2026-03-04. gpt-image-1-mini takes no new customers, so gpt-image-2."
        ),
        sources=(_LEARN_IMAGE_HOWTO, _LEARN_QUOTAS),
    ),
    Family(
        name=GPT_IMAGE_1,
        rules=_GPT_IMAGE_1_RULES,
        status="preview",
        no_new_customers=None,
        retires=date(2026, 10, 23),
        successor=GPT_IMAGE_2,
        version="2025-04-15",
        in_templates=False,
        registration=True,
        requests_per_minute=MappingProxyType({"GlobalStandard": 9}),
        notes="Learn named gpt-image-1-mini as replacement; that takes no new customers since 2026-10-06, so gpt-image-2.",
        sources=(_LEARN_RETIREMENTS, _LEARN_IMAGE_HOWTO, _LEARN_QUOTAS),
        edits=_EDITS_WITH_FIDELITY,
    ),
    Family(
        name=GPT_IMAGE_1_MINI,
        rules=_GPT_IMAGE_1_RULES,
        status="ga",
        no_new_customers=date(2026, 10, 6),
        retires=date(2027, 4, 7),
        successor=GPT_IMAGE_2,
        version="2025-10-06",
        in_templates=True,
        registration=True,
        requests_per_minute=MappingProxyType({"GlobalStandard": 12}),
        sources=(_LEARN_RETIREMENTS, _LEARN_IMAGE_HOWTO, _LEARN_QUOTAS),
        edits=_EDITS,
    ),
    Family(
        name=GPT_IMAGE_1_5,
        rules=_GPT_IMAGE_1_RULES,
        status="ga",
        no_new_customers=None,
        retires=date(2027, 6, 16),
        successor=GPT_IMAGE_2,
        version="2025-12-16",
        in_templates=True,
        registration=True,
        requests_per_minute=MappingProxyType({"GlobalStandard": 9, "DataZoneStandard": 3}),
        notes=(
            "GA. The schedule of 2026-09 retires it on 2027-06-16; the April 2026 schedule said 2026-12-16 ('no earlier "
            "than'). DataZoneStandard 3: " + _ISSUE_11 + "."
        ),
        sources=(_SCHEDULE_2026_09, _LEARN_RETIREMENTS, _LEARN_IMAGE_HOWTO, _LEARN_QUOTAS),
        edits=_EDITS_WITH_FIDELITY,
    ),
    Family(
        name=GPT_IMAGE_2,
        rules=_GPT_IMAGE_2_RULES,
        status="ga",
        no_new_customers=None,
        retires=date(2027, 10, 21),
        successor=None,
        version="2026-04-21",
        in_templates=True,
        registration=False,
        requests_per_minute=MappingProxyType({"GlobalStandard": 6, "DataZoneStandard": 2}),
        notes=(
            "GA on Azure from 2026-04-21. The schedule of 2026-09 retires it on 2027-10-21 (GA versions live at least 12 "
            "months). No deprecation date published. DataZoneStandard 2: " + _ISSUE_11 + "."
        ),
        sources=(
            _SCHEDULE_2026_09,
            "techcommunity.microsoft.com 'Introducing OpenAI's GPT-image-2 in Microsoft Foundry' (2026-04-21, GA)",
            "ai.azure.com/catalog/models/gpt-image-2 (version 2026-04-21, size limits)",
            _LEARN_QUOTAS,
        ),
        edits=_EDITS,
    ),
    *(
        Family(
            name=variant,
            rules=None,
            status="openai-only",
            no_new_customers=None,
            retires=None,
            successor=None,
            version=None,
            in_templates=False,
            registration=False,
            requests_per_minute=MappingProxyType({}),
            notes=(
                "OpenAI (2026-09-08) publishes two models, gpt-image-2.5-flare and gpt-image-2.5-sunburst, and no "
                "bare gpt-image-2.5 id; quality adds xhigh and max to low/medium/high/auto; png, jpeg, webp; "
                "transparent backgrounds. Not found for Azure: model version, lifecycle, regions, registration, "
                "size limits, prompt limit, and whether Azure accepts xhigh and max (checked 2026-12-06). OpenAI-only "
                "until Azure lists it: the service does not accept this family until Azure publishes its rules (then: "
                "rules, dates, version, quota in this row)."
            ),
            sources=("developers.openai.com/api/docs/models/gpt-image-2.5-flare (as quoted by API relays)",),
        )
        for variant in (GPT_IMAGE_2_5_FLARE, GPT_IMAGE_2_5_SUNBURST)
    ),
)

BY_NAME: Mapping[str, Family] = MappingProxyType({row.name: row for row in TABLE})
# Families the service accepts: every row whose rules are known, retired ones included
# (a deployment keeps answering until Azure says otherwise).
FAMILIES = frozenset(row.name for row in TABLE if row.rules is not None)
GPT_IMAGE_FAMILIES = frozenset(row.name for row in TABLE if row.rules is not None and row.rules.api == "gpt-image")


def rules_of(family: str) -> Rules:
    """The request rules of an accepted family; ValueError (a configuration bug) for any other name."""
    row = BY_NAME.get(family)
    if row is None or row.rules is None:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(sorted(FAMILIES))}")
    return row.rules


def family_for_name(name: str) -> str | None:
    """The family a deployment named like one runs ("gpt-image-1-mini" -> itself), else None."""
    lowered = name.strip().lower()
    return lowered if lowered in FAMILIES else None


def iac_versions() -> dict[str, str]:
    """{model: version} the templates offer; infra/ keeps the same table (tests/test_infra_models.py)."""
    return {row.name: row.version for row in TABLE if row.in_templates and row.version is not None}


def iac_skus() -> dict[str, tuple[str, ...]]:
    """{model: deployment types} the templates accept for it: the types its quota table lists (tests/test_infra_models.py)."""
    return {row.name: tuple(row.requests_per_minute) for row in TABLE if row.in_templates}
