"""Edit requests: the family's edit rules (``Family.edits``), checked before anything is stored or sent.

An edit is a generation request plus input images and an optional mask. The fields it
shares with generations (prompt, n, size, quality, output_format, output_compression,
background, user, model, response_format) go through :func:`~shared.models.parse_request`,
so they are checked and translated exactly as for generations; this module adds what is
particular to edits:

- :func:`edit_rules`: the family edits at all (dall-e-3 does not, on Azure);
- :func:`parse_edit`: the fields (unknown ones refused, ``input_fidelity`` only where the
  family has it; ``stream`` and ``partial_images`` as for generations) and how many images;
- :func:`check_inputs`: the bytes: each image a format the upstream takes (sniffed, never
  the name or Content-Type claimed), the mask a PNG with an alpha channel and the same
  size as the first image.

Everything here is pure (no I/O), so the HTTP routes and the queue handler share it.
Every refusal is a 400 naming the parameter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.echo import capped, shown
from shared.errors import ServiceError, invalid
from shared.models.families import BY_NAME, EditRules
from shared.models.image_bytes import ImageFacts, sniff
from shared.models.parsing import ImageRequest, parse_request

EDIT_OPERATION = "edit"  # the queue message's "operation" for an edit
FILE_FIELDS = ("image", "image[]", "mask")  # the parameters that carry images
# Fields an edit shares with generations: parse_request checks and translates them.
_SHARED_FIELDS = (
    "prompt", "n", "size", "quality", "output_format", "output_compression", "background", "user", "model", "response_format", "stream", "partial_images",
)  # fmt: skip
_INTEGER_FIELDS = frozenset({"n", "output_compression", "partial_images"})
_BOOLEAN_FIELDS = frozenset({"stream"})
_DIGITS = re.compile(r"-?[0-9]{1,9}")


@dataclass(frozen=True)
class NotOffered:
    """An edit parameter upstream has and this service does not offer (yet): the one value it takes, and why not another."""

    value: object
    refusal: str
    code: str = "unsupported_value"


# What this service does not offer: refused unless sent as its one value, and never listed as accepted
# (accepted_fields). Empty since streaming arrived (stream and partial_images follow the family's rules).
NOT_OFFERED: dict[str, NotOffered] = {}


@dataclass(frozen=True)
class EditRequest(ImageRequest):
    """A checked edit: the generation fields as :class:`ImageRequest` has them, plus its inputs by archive name."""

    images: tuple[str, ...] = ()  # the input images, in order (the mask applies to the first)
    mask: str | None = None


@dataclass(frozen=True)
class EditInput:
    """One input image as read: its archive name, bytes and what the bytes say it is."""

    name: str
    data: bytes = dataclasses.field(repr=False)
    facts: ImageFacts
    sha256: str = ""  # of the bytes, for an upload (stored with it); "" for an input read by name


def edit_rules(family: str, param: str | None = None) -> EditRules:
    """The family's edit rules; 400 ``OperationNotSupported`` for a family that does not edit images."""
    row = BY_NAME.get(family)
    if row is None or row.edits is None:
        editing = sorted(r.name for r in BY_NAME.values() if r.edits is not None)
        raise ServiceError(
            400,
            "OperationNotSupported",
            f"{family} deployments cannot edit images: Azure OpenAI serves image edits only for the gpt-image models "
            f"({', '.join(editing)}). Send the edit to a deployment of one of those.",
            param=param,
            extra={"type": "invalid_request_error"},
        )
    return row.edits


def form_values(raw: Mapping[str, str]) -> dict[str, Any]:
    """multipart/form-data text fields as the JSON values they stand for (``"2"`` -> 2, ``"false"`` -> False)."""
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if name in _INTEGER_FIELDS:
            if not _DIGITS.fullmatch(text.strip()):
                raise invalid(name, f"{name} must be an integer, got {text[:40]!r}.", "invalid_type")
            values[name] = int(text)
        elif name in _BOOLEAN_FIELDS:
            if text.strip().lower() not in ("true", "false"):
                raise invalid(name, f"{name} must be true or false, got {text[:40]!r}.", "invalid_type")
            values[name] = text.strip().lower() == "true"
        else:
            values[name] = text
    return values


def parse_edit(
    fields: Mapping[str, Any],
    images: Sequence[str],
    mask: str | None,
    deployment: str,
    family: str,
    *,
    api_style_v1: bool = False,
    image_param: str = "image",
) -> EditRequest:
    """Check an edit's fields (JSON values, without the images) and its inputs' archive names.

    ``image_param`` is how the caller named the images (``image`` or ``image[]``), for the
    refusals. Raises ServiceError 400 naming the parameter; ValueError for a family this
    service does not know (a configuration bug).
    """
    rules = edit_rules(family, "model" if api_style_v1 else "deployment")
    allowed = rules.fields - set(FILE_FIELDS)  # the images come apart from the fields
    for name in fields:
        if name not in allowed:
            raise _unknown(name, family, rules)
    given = {name: value for name, value in fields.items() if value is not None}
    _check_count(len(images), rules, image_param)
    extra = _edit_only(given, family, rules)
    base = parse_request({k: v for k, v in given.items() if k in _SHARED_FIELDS}, deployment, family, api_style_v1=api_style_v1)
    asked = {**base.asked, **{k: given[k] for k in extra}, "image": list(images), **({"mask": mask} if mask else {})}
    upstream = {**base.upstream_body, **extra}
    return EditRequest(**{**_fields_of(base), "asked": asked, "upstream_body": upstream}, images=tuple(images), mask=mask)


def accepted_fields(rules: EditRules) -> list[str]:
    """The parameters an edit to a family with ``rules`` takes: its fields, less those this service does not offer."""
    return sorted(rules.fields - NOT_OFFERED.keys())


def _unknown(name: str, family: str, rules: EditRules) -> ServiceError:
    takers = sorted(row.name for row in BY_NAME.values() if row.edits is not None and name in row.edits.fields)
    where = f"{family} has no {shown(name)} (edits to {', '.join(takers)} do)" if takers else f"{shown(name)} is not an edit parameter"
    return invalid(capped(name), f"Unknown parameter: {where}. Edits to {family} accept: {', '.join(accepted_fields(rules))}.", "unknown_parameter")


def _fields_of(request: ImageRequest) -> dict[str, Any]:
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(ImageRequest)}


def _check_count(count: int, rules: EditRules, param: str) -> None:
    if count == 0:
        raise invalid("image", "image is required: the image (or up to 16 images, as image[]) to edit.", "missing_required_parameter")
    if count > rules.max_images:
        raise invalid(param, f"At most {rules.max_images} images can be edited together, got {count}.")


def _edit_only(given: dict[str, Any], family: str, rules: EditRules) -> dict[str, Any]:
    """input_fidelity and what is not offered (NOT_OFFERED): the edit fields parse_request does not know."""
    for name, offer in NOT_OFFERED.items():
        if name in given and not (type(given[name]) is type(offer.value) and given[name] == offer.value):
            raise invalid(name, offer.refusal, offer.code)
    extra: dict[str, Any] = {}
    if "input_fidelity" in given:
        fidelity = given["input_fidelity"]
        if not isinstance(fidelity, str):
            raise invalid("input_fidelity", "input_fidelity must be a string.", "invalid_type")
        if fidelity not in rules.input_fidelities:
            raise invalid("input_fidelity", f"input_fidelity must be one of {', '.join(map(repr, rules.input_fidelities))} for {family}, got {shown(fidelity, 40)}.")
        extra["input_fidelity"] = fidelity
    return extra


def check_inputs(
    rules: EditRules, images: Sequence[tuple[str, bytes]], mask: bytes | None, *, openai: bool = False
) -> tuple[list[ImageFacts], ImageFacts | None]:
    """Check the bytes of each image (``(param, data)`` in order) and of the mask; their facts.

    ``openai`` says the upstream is OpenAI's own API, which also takes WEBP. Raises
    ServiceError 400 naming the parameter.
    """
    formats = rules.openai_input_formats if openai else rules.input_formats
    facts = []
    for index, (param, data) in enumerate(images):
        found = sniff(data)
        which = f"image {index + 1}" if len(images) > 1 else "the image"
        if found is None:
            raise invalid(param, f"{which} is not a PNG, JPEG or WEBP file whose header can be read (judged by its bytes, not its name).", "invalid_image_format")
        if found.format not in formats:
            raise invalid(param, f"{which} is {found.format.upper()}; edits take {' or '.join(f.upper() for f in formats)} here.", "invalid_image_format")
        facts.append(found)
    return facts, (_check_mask(mask, facts[0]) if mask is not None and facts else None)


def _check_mask(data: bytes, first: ImageFacts) -> ImageFacts:
    found = sniff(data)
    if found is None or found.format != "png":
        what = "not an image" if found is None else f"a {found.format.upper()}"
        raise invalid("mask", f"The mask must be a PNG with an alpha channel; this one is {what}.", "invalid_image_format")
    if not found.has_alpha:
        raise invalid(
            "mask", "The mask must have an alpha channel (RGBA, grey + alpha, or tRNS): its transparent pixels mark where to edit.", "invalid_mask"
        )
    if (found.width, found.height) != (first.width, first.height):
        raise invalid(
            "mask",
            f"The mask must have the size of the (first) image: the mask is {found.width}x{found.height}, the image {first.width}x{first.height}.",
            "invalid_mask",
        )
    return found


def names_from_json(body: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The archived names a JSON edit gives: ``image`` (a name or a list of names) and ``mask`` (a name)."""
    value = body.get("image")
    if value is None:
        raise invalid("image", "image is required: the archived name of the image to edit (or a list of names).", "missing_required_parameter")
    images = [value] if isinstance(value, str) else value
    if not isinstance(images, list) or not all(isinstance(name, str) for name in images):
        raise invalid("image", "image must be an archived image's name or a list of names.", "invalid_type")
    mask = body.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise invalid("mask", "mask must be the archived name of a PNG with an alpha channel.", "invalid_type")
    return images, mask


def edit_record_fields(request: ImageRequest) -> dict[str, Any]:
    """What an edit's record adds (``operation`` and the inputs by name); nothing for a generation."""
    if not isinstance(request, EditRequest):
        return {}
    return {"operation": EDIT_OPERATION, "inputs": {"image": list(request.images), "mask": request.mask}}
