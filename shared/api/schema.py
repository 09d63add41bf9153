"""The generation request's schema in OpenAPI, built from the model family rows (shared/models/families.py).

Bounds and choices are read from the rules parse_request enforces, never restated here, so
the published schema cannot drift from the checks (tests/test_api.py holds one to the other).
The schema is the union over families; each property says which families differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from shared import models
from shared.api.public import KNOWN_API_VERSIONS
from shared.models import Rules


def _families(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _rules() -> dict[str, Rules]:
    """Every family the service accepts, with its rules (announced families have none yet)."""
    return {row.name: row.rules for row in models.TABLE if row.rules is not None}


def _only_for(field: str) -> str:
    """The sentence naming the families that take ``field``, or "" when every family does."""
    takers = [family for family, allowed in models.FIELDS_BY_FAMILY.items() if field in allowed]
    return "" if len(takers) == len(models.FIELDS_BY_FAMILY) else f" Only for {_families(takers)}."


def _by_family(values: Callable[[Rules], Iterable[str]]) -> str:
    """"fam-a, fam-b: x, y. fam-c: z" — families grouped by the values they accept."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for family, rules in _rules().items():
        if found := tuple(values(rules)):
            groups.setdefault(found, []).append(family)
    return " ".join(f"{_families(names)}: {', '.join(found)}." for found, names in groups.items())


def _rule_choice(field: str, values: Callable[[Rules], Iterable[str]], description: str = "") -> dict[str, Any]:
    """An enum over the values any family accepts for ``field``, saying which family takes which."""
    union = list(dict.fromkeys(v for rules in _rules().values() for v in values(rules)))
    text = f"{description} {_by_family(values)}{_only_for(field)}".strip()
    return {"type": "string", "enum": union, "description": text}


def _prompt() -> dict[str, Any]:
    by_limit: dict[int, list[str]] = {}
    for family, limit in models.PROMPT_LIMITS.items():
        by_limit.setdefault(limit, []).append(family)
    limits = "; ".join(f"{_families(names)}: 1-{limit}" for limit, names in sorted(by_limit.items()))
    return {"type": "string", "minLength": 1, "maxLength": max(models.PROMPT_LIMITS.values()), "description": f"Characters: {limits}."}


def _size_rule_text(rules: Rules) -> Iterable[str]:
    rule = rules.size_rule
    if rule is not None:
        yield (
            f"WIDTHxHEIGHT with edges multiples of {rule.edge_multiple}, long edge under {rule.max_edge_exclusive}, "
            f"at most {rule.max_ratio}:1, {rule.min_pixels:,}-{rule.max_pixels:,} pixels"
        )
    yield from (f"{a} (translated to {b})" for a, b in rules.seed_sizes.items())


def _size() -> dict[str, Any]:
    examples = list(dict.fromkeys(size for rules in _rules().values() for size in rules.sizes))
    return {
        "type": "string",
        "examples": examples,
        "description": f"{_by_family(lambda r: r.sizes)} Also: {_by_family(_size_rule_text)}",
    }


def _n() -> dict[str, Any]:
    maxima = {family: rules.max_n for family, rules in _rules().items()}
    text = "; ".join(f"{family}: 1-{top}" for family, top in sorted(maxima.items()))
    return {"type": "integer", "minimum": 1, "maximum": max(maxima.values()), "description": f"Images: {text}."}


def _quality() -> dict[str, Any]:
    return _rule_choice("quality", lambda r: (*r.qualities, *r.seed_qualities), "Seed values (standard, hd) are translated for gpt-image.")


def _output_compression() -> dict[str, Any]:
    low, high = models.OUTPUT_COMPRESSION_RANGE
    return {"type": "integer", "minimum": low, "maximum": high, "description": ("With output_format jpeg only." + _only_for("output_compression"))}


def _partial_images() -> dict[str, Any]:
    ranges = [rules.partial_images for rules in _rules().values() if rules.partial_images is not None]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return {"type": "integer", "minimum": low, "maximum": high, "description": "Partial images before the final one; needs stream." + _only_for("partial_images")}


# One entry per field parse_request knows, in the order a reader meets them.
_PROPERTIES: dict[str, Callable[[], dict[str, Any]]] = {
    "prompt": _prompt,
    "size": _size,
    "n": _n,
    "quality": _quality,
    "style": lambda: _rule_choice("style", lambda r: r.styles, "Sent to dall-e-3; dropped (and recorded) for gpt-image."),
    "response_format": lambda: {
        "type": "string",
        "enum": list(models.RESPONSE_FORMATS),
        "description": (
            "What the answer carries. Default: as the deployment's model answers, b64_json (plus url) for gpt-image, url for "
            "dall-e-3. url always links to the archived copy; upstream is always asked for base64."
        ),
    },
    "output_format": lambda: _rule_choice("output_format", lambda r: r.output_formats),
    "output_compression": _output_compression,
    "background": lambda: _rule_choice("background", lambda r: r.backgrounds, "transparent needs output_format png."),
    "moderation": lambda: _rule_choice("moderation", lambda r: r.moderations),
    "user": lambda: {"type": "string", "maxLength": models.USER_MAX_CHARS},
    "stream": lambda: {"type": "boolean", "description": "true: the answer is text/event-stream (see the 200 answer); n must be 1." + _only_for("stream")},
    "partial_images": _partial_images,
    "model": lambda: {"type": "string", "description": "Deployment name (v1 path); elsewhere the deployment or its family, or absent."},
}


def generation_schema() -> dict[str, Any]:
    """The JSON schema of a generation request body; ValueError if a field parse_request knows has no entry here."""
    missing = models.KNOWN_FIELDS - set(_PROPERTIES)
    if missing:
        raise ValueError(f"the OpenAPI schema has no entry for {', '.join(sorted(missing))}; add one to shared/api/schema.py")
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {name: build() for name, build in _PROPERTIES.items() if name in models.KNOWN_FIELDS},
    }


# --- responses, headers and parameters: what /openapi.json promises besides the request body (security: shared/api/security.py) ---

_ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "e.g. invalid_value, contentFilter, DeploymentNotFound, 429, UpstreamTimeout"},
                "message": {"type": "string"},
                "param": {"type": "string", "description": "The parameter at fault, when one is."},
                "type": {"type": "string"},
                "filtered": {"type": "string", "enum": ["prompt", "image"], "description": "contentFilter: which side was filtered."},
                "categories": {"type": "array", "items": {"type": "string"}, "description": "contentFilter: the categories upstream flagged."},
                "content_filter_results": {"type": "object"},
                "revised_prompt": {"type": "string"},
                "dequeue_count": {"type": "integer", "description": "Background jobs: the delivery that gave up."},
            },
        }
    },
}
_ITEM = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "Read-only SAS link to the archived copy (IMAGES_LINK_TTL_SECONDS)."},
        "b64_json": {
            "type": "string",
            "description": "The image, base64: by default from gpt-image deployments (as gpt-image answers), or with response_format b64_json.",
        },
        "revised_prompt": {"type": "string"},
        "content_filter_results": {"type": "object"},
        "prompt_filter_results": {"type": "object"},
    },
}
_GENERATION_BODY = {
    "type": "object",
    "required": ["created", "data"],
    "properties": {"created": {"type": "integer"}, "data": {"type": "array", "items": _ITEM}, "usage": {"type": "object"}},
}
_ACCEPTED_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["notRunning", "running", "succeeded", "failed"]}},
}
_RESULT_ITEM = {
    "type": "object",
    "required": ["url", "name"],
    "properties": {
        "url": {"type": "string", "description": "A fresh read-only SAS link, signed at each poll."},
        "name": {"type": "string", "description": "The blob's name in the images container (for GET /images/{name} and storage tools)."},
        "revised_prompt": {"type": "string"},
    },
}
_OPERATION_BODY = {
    "type": "object",
    "required": ["id", "status", "created"],
    "properties": {
        **_ACCEPTED_BODY["properties"],
        "created": {"type": "integer"},
        "result": {
            "type": "object",
            "required": ["created", "data"],
            "properties": {
                "created": {"type": "integer"},
                "data": {"type": "array", "items": _RESULT_ITEM},
                "usage": {"type": "object"},
                "translations": {"type": "array", "items": {"type": "string"}},
            },
        },
        "error": _ERROR_BODY["properties"]["error"],
    },
}
_HEALTH_BODY = {
    "type": "object",
    "required": ["status", "deployments", "api_style", "models"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "deployments": {"type": "array", "items": {"type": "string"}},
        "api_style": {"type": "string", "enum": ["deployment", "v1", "openai"]},
        "models": {"type": "array", "items": {"type": "object", "required": ["deployment", "family", "status"]}},
    },
}


def _header(description: str, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string"}}


_REQUEST_ID = _header("This request's id: the archive files it (and any failure record) under it.")
_TRANSLATIONS = _header("Every translation made for the deployment's model, as a JSON array of sentences ([] for none).", required=True)
_RETRY_AFTER = _header("Seconds to wait before trying again (or polling).", required=True)
_HEADERS: dict[int, dict[str, Any]] = {
    200: {"x-request-id": {**_REQUEST_ID, "required": True}, "x-images-translations": _TRANSLATIONS},
    202: {
        "Operation-Location": _header("Where to poll the job: GET /openai/operations/images/{id}.", required=True),
        "Retry-After": _RETRY_AFTER,
        "x-images-translations": _TRANSLATIONS,
    },
    429: {"Retry-After": _RETRY_AFTER, "retry-after-ms": _header("The same wait in milliseconds.", required=True)},
}


# What "stream": true answers: server-sent events, upstream's types, the completed one extended.
_EVENTS = {"type": "string", "description": (
    "Events 'event: <type>' + 'data: <JSON>', <kind> image_generation or image_edit: <kind>.partial_image (upstream's), then "
    "<kind>.completed (upstream's fields plus url, the stable /images/{name} link, name and cost of the archived image); "
    "or an 'error' event ({type: error, error: {code, message, param?}}) that ends the stream.")}  # fmt: skip


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(texts: dict[int, str], headers: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """Error responses in the Azure shape; ``default`` covers the rest (405, a crash) and keeps FastAPI's 422, never sent, out."""
    found: dict[int | str, dict[str, Any]] = {status: _json(_ERROR_BODY, text, (headers or {}).get(status)) for status, text in texts.items()}
    found["default"] = _json(_ERROR_BODY, "Any other error (405 MethodNotAllowed, 500 InternalServerError), in the same shape.")
    return found


_REFUSED = {
    400: "The request breaks a rule (param names it); or the content filter refused the prompt or the image (contentFilter).",
    403: "DeploymentNotAllowed: the caller may not use this deployment (IMAGES_CALLER_LIMITS).",
    404: "DeploymentNotFound: the deployment is not served here.",
    409: "IdempotencyKeyReused: this Idempotency-Key (for this deployment and caller) came with another request.",
    413: "request_too_large: the body is over IMAGES_MAX_BODY_BYTES.",
    415: "unsupported_media_type: the body is not application/json (UTF-8).",
    503: "StorageUnavailable or CredentialUnavailable: storage, Key Vault or the identity endpoint could not be reached.",
}
_UPSTREAM = {
    403: "DeploymentNotAllowed (the caller may not use this deployment), or the model service blocked the resource for policy reasons (its answer).",
    429: (
        "RateLimited or BudgetExceeded: the caller's images a minute or USD a day (IMAGES_CALLER_LIMITS; x-ratelimit-* say where it stands); "
        "or the deployment throttled beyond IMAGES_RETRY_BUDGET_SECONDS, its Retry-After passed on."
    ),
    500: "ConfigurationError: the model key's secret is missing, empty or disabled in Key Vault.",
    502: "UpstreamError, UpstreamUnavailable or UpstreamAuthenticationFailed.",
    504: "UpstreamTimeout: no answer within IMAGES_SYNC_TIMEOUT_SECONDS; never repeated, it may be billed.",
}


_EDIT_REFUSED = {
    **_REFUSED,
    400: (
        "The request breaks a rule (param names it): a field, or an image or mask the family does not take; OperationNotSupported: "
        "the deployment does not edit images; or the content filter refused the prompt or the image (contentFilter)."
    ),
    413: "request_too_large: the body, a file or the files together are over IMAGES_MAX_BODY_BYTES, IMAGES_MAX_EDIT_FILE_BYTES or IMAGES_MAX_EDIT_TOTAL_BYTES.",
    415: "unsupported_media_type: the body is neither multipart/form-data (uploaded images) nor application/json (archived names).",
}


def _answer_responses(refused: dict[int, str], ok: dict[str, Any], what: str) -> dict[int | str, dict[str, Any]]:
    """The answer now, the background acceptance, and every error status, refusals and upstream's."""
    after_upstream = {status: {"x-request-id": _REQUEST_ID} for status in (400, 403, 429, 500, 502, 503, 504)}
    for status, headers in {**_HEADERS, 200: ok}.items():
        after_upstream.setdefault(status, {}).update(headers)
    answer = _json(_GENERATION_BODY, f"The {what}, archived: url always; b64_json from gpt-image deployments by default. With stream: events.", ok)
    answer["content"]["text/event-stream"] = {"schema": _EVENTS}
    return {
        200: answer,
        202: _json(_ACCEPTED_BODY, "Queued (with Prefer: respond-async): poll Operation-Location.", _HEADERS[202]),
        **_errors({**refused, **_UPSTREAM}, after_upstream),
    }


def generation_responses() -> dict[int | str, dict[str, Any]]:
    """``responses`` of the generation routes: the answer, the background acceptance, every error status."""
    return _answer_responses(_REFUSED, _HEADERS[200], "images")


def edit_responses() -> dict[int | str, dict[str, Any]]:
    """``responses`` of the edit routes: as generations', but an edit translates nothing (no x-images-translations)."""
    return _answer_responses(_EDIT_REFUSED, {"x-request-id": _HEADERS[200]["x-request-id"]}, "edited images")


def submit_responses(*, edits: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses`` of ``:submit`` (of generations, or with ``edits`` of edits): the acceptance and what refuses it."""
    return {202: _json(_ACCEPTED_BODY, "Queued: poll Operation-Location.", _HEADERS[202]), **_errors(_EDIT_REFUSED if edits else _REFUSED)}


def operation_responses() -> dict[int | str, dict[str, Any]]:
    """``responses`` of the job status route."""
    running = {"Retry-After": _header("Present while the job has not finished: seconds until the next poll.")}
    return {
        200: _json(_OPERATION_BODY, "The job: result (links signed now, blob names) or error once it ends.", running),
        **_errors({404: "NotFound: no job has this id.", 503: _REFUSED[503]}),
    }


def image_link_responses() -> dict[int | str, dict[str, Any]]:
    """``responses`` of the stable image link."""
    redirect = {
        "Location": _header("A fresh read-only SAS URL of the blob.", required=True),
        "Cache-Control": _header("no-store: the redirect itself is never cached.", required=True),
    }
    return {
        302: {"description": "Redirect to a fresh read-only SAS URL.", "headers": redirect},
        **_errors({404: "NotFound: no archived image or record has this name.", 503: _REFUSED[503]}),
    }


def health_responses() -> dict[int | str, dict[str, Any]]:
    """``responses`` of /healthz."""
    return {200: _json(_HEALTH_BODY, "The process answers; the deployments it serves and their lifecycle."), **_errors({})}


def json_responses(body: dict[str, Any], what: str, errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a JSON view: its body, and its errors (storage's 503 too) in the Azure shape."""
    return {200: _json(body, what), **_errors({**errors, 503: _REFUSED[503]})}


def page_responses(what: str, errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses`` of a gallery page: HTML for people, errors in the Azure shape as everywhere."""
    return {200: {"description": what, "content": {"text/html": {"schema": {"type": "string"}}}}, **_errors({**errors, 503: _REFUSED[503]})}


def _parameter(
    name: str, where: str, description: str, *, required: bool = False, pattern: str | None = None, enum: tuple[str, ...] = ()
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    if enum:
        schema["enum"] = list(enum)
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema}


IDEMPOTENCY_KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def generation_openapi(api_version: Literal["required", "optional", "none"] = "required", *, prefer: bool = True) -> dict[str, Any]:
    """``openapi_extra`` of the generation routes: the request body and the parameters FastAPI does not see
    (the routes read them from the request): ``api-version``, ``Idempotency-Key`` and ``Prefer``."""
    parameters = []
    if api_version != "none":
        parameters.append(
            _parameter(
                "api-version", "query", "An Azure OpenAI inference version this service knows (not sent upstream: AZURE_OPENAI_API_VERSION is).",
                required=api_version == "required", enum=KNOWN_API_VERSIONS,
            )
        )  # fmt: skip
    parameters.append(
        _parameter(
            "Idempotency-Key", "header",
            "Background generation: the same key (for the same deployment and caller) returns the same job; 409 with another request.",
            pattern=IDEMPOTENCY_KEY_PATTERN,
        )
    )  # fmt: skip
    if prefer:
        parameters.append(_parameter("Prefer", "header", "respond-async: queue the generation instead (202 with Operation-Location)."))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": generation_schema()}}}, "parameters": parameters}
