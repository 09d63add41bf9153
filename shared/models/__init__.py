"""Model families (one row of data each), request parsing and translation, lifecycle views.

``from shared.models import X`` keeps working for everything the modules below export;
the rows themselves are in :mod:`shared.models.families`.
"""

from shared.models.families import (
    BY_NAME,
    CHECKED,
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
    TABLE,
    Family,
    Rules,
    SizeRule,
    family_for_name,
    iac_skus,
    iac_versions,
    rules_of,
)
from shared.models.lifecycle import lifecycle_state, lifecycle_view, retired_warnings
from shared.models.parsing import (
    FIELDS_BY_FAMILY,
    KNOWN_FIELDS,
    OUTPUT_COMPRESSION_RANGE,
    PROMPT_LIMITS,
    RESPONSE_FORMATS,
    USER_MAX_CHARS,
    ImageRequest,
    parse_request,
)

__all__ = [
    "BY_NAME",
    "CHECKED",
    "DALL_E_3",
    "FAMILIES",
    "FIELDS_BY_FAMILY",
    "GPT_IMAGE_1",
    "GPT_IMAGE_1_5",
    "GPT_IMAGE_1_MINI",
    "GPT_IMAGE_2",
    "GPT_IMAGE_2_5_FLARE",
    "GPT_IMAGE_2_5_SUNBURST",
    "GPT_IMAGE_FAMILIES",
    "IAC_DEFAULT_MODEL",
    "KNOWN_FIELDS",
    "OUTPUT_COMPRESSION_RANGE",
    "PROMPT_LIMITS",
    "RESPONSE_FORMATS",
    "TABLE",
    "USER_MAX_CHARS",
    "Family",
    "ImageRequest",
    "Rules",
    "SizeRule",
    "family_for_name",
    "iac_skus",
    "iac_versions",
    "lifecycle_state",
    "lifecycle_view",
    "parse_request",
    "retired_warnings",
    "rules_of",
]
