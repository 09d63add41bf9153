"""A local stand-in for the Azure OpenAI images API (and OpenAI's own). Never deployed.

It speaks the real protocol, so tests, the local stack and benchmarks catch what the
happy path would hide: each model family's rules, the error shapes seen in the field,
latency, per-deployment quota, injected faults, content filtering, expiring URLs, auth.

Paths
    POST /openai/deployments/{deployment}/images/generations?api-version=...
        Azure, deployment-scoped. api-version is required (400 without it); gpt-image
        needs a preview version >= 2025-04-01-preview there (GA 2024-10-21 knows only
        DALL-E: 400 OperationNotSupported). A ``model`` in the body that differs from the
        deployment answers 404 "The model '<x>' does not exist" (``model_in_body``).
    POST /openai/v1/images/generations      Azure v1: body ``model`` = deployment name; the key may
                                            also come as ``Authorization: Bearer <key>`` (OpenAI client).
    POST /v1/images/generations             OpenAI: ``Authorization: Bearer <key>``,
                                            ``model`` = a family or deployment name.
    GET  /_sim/blobs/{id}.png?se=...&sig=sim  dall-e-3 ``url`` results; 403 with Azure
                                            Blob's XML ``AuthenticationFailed`` once ``se``
                                            has passed (``url_ttl_seconds``).
Control (tests and benchmarks drive a simulator in another thread or process)
    GET  /_sim/stats    counters, per-deployment generations, recent requests (secrets redacted)
    GET  /_sim/config   the current configuration (keys redacted)
    POST /_sim/config   partial update, JSON object of SimulatorConfig fields
                        (``"latency": [min, max]`` sets a range; a number clears latency_max)
    POST /_sim/reset    zero the stats and the quota windows, clock back to real time
                        (configuration and blobs stay)
    GET  /_sim/clock    the simulator's time (URL expiry, quota windows, ``created``)
    POST /_sim/clock    {"frozen": true|false, "advance": seconds, "real": true}: tests move time
                        instead of sleeping (a frozen quota window never ends by itself)
    POST /_sim/wait     {"at_least": {counter: n}, "at_most": {counter: n}, "timeout": s}: answers
                        200 with the stats once they hold (woken by each change, no polling),
                        408 with the stats at the timeout
    POST /_sim/release  end the latency or hang of every generation at work now, as if it had
                        passed: with a long latency or [[hang]] this is a gate a test opens
    GET  /_sim/health   {"ok": true}
In process the same state is ``app.state.sim`` (a :class:`Simulator`: ``clock``, ``wait_for``,
``release``); ``create_simulator(config, clock=SimClock())`` injects the clock.

Prompt markers (``MARKERS``; the prompt is otherwise ignored)
    [[filter:prompt]]          400 content_policy_violation, inner_error ResponsibleAIPolicyViolation,
                               violence filtered (severity high), revised_prompt
    [[filter:prompt:legacy]]   400 {"created", "error": {"code": "contentFilter",
                               "message": "Your task failed as a result of our safety system."}}
    [[filter:image]]           400 content_policy_violation, message starts "Generated image was
                               filtered as a result of our safety system.", sexual filtered
    [[filter:image:legacy]]    400 {"created", "error": {"code": "contentFilter",
                               "message": "Generated image was filtered as a result of our safety system."}}
    [[hang]] / [[hang:S]]      the generation takes ``hang_seconds`` (or S) instead of the latency
    [[fail]] / [[fail:STATUS]] this request answers ``fail_status`` (or STATUS: 408, 409, 413, 422, 499, 500-504)
    [[nan-created]], [[drip]], [[echo-key]] ...  upstream misbehaviour: see local/faults.py
    [[stream-cut:K]], [[stream-stall:K]], [[stream-error:K]]  a streamed answer that breaks after K events:
                               see local/sim_stream.py

``"stream": true`` (gpt-image families, generations and edits) answers server-sent events, partial
images spaced over the latency, as local/sim_stream.py describes.
Prompt filters answer before any latency; image filters answer after it (the image was made).

Order of checks: api-version, auth (401), deployment (404), JSON body, ``model``, rules (400),
policy block (403), quota (429), injected faults (5xx), prompt filter (400), then the work.

Billing: a request is billed (``generations`` and the per-deployment count go up) when the
work starts: after auth, rules, quota, faults and the prompt filter, *before* the latency
sleep. A client that times out or disconnects during the sleep has still been billed, as
with the real service (the simulator then stops the sleep and counts it ``abandoned``). Throttled, refused, failed and prompt-filtered requests are not
billed; image-filtered ones are. Requests that pass the quota check use up quota, even
if they then fail or are filtered; throttled ones do not.

Auth: with no ``api_keys``, no ``bearer_validator`` and ``accept_any_bearer`` off, nothing is
checked (``require_auth=None``, the local convenience); ``require_auth`` forces it either way.

Images are real PNG/JPEG of the requested size and realistic weight (a 1024x1024 PNG is about
2.3 MB). A few variants per (size, format, quality, background) are rendered once per process
and every result gets its own tEXt (PNG) or COM (JPEG) segment, so no two are byte-equal and
per-request CPU stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import io
import itertools
import json
import math
import random
import re
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from PIL import Image, ImageChops, ImageDraw
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from local import faults
from local.sim_stream import (
    STREAM_MARKERS,
    STREAM_PATTERN,
    ImageStream,
    Prefix,
    StreamedImage,
    quiet_cuts,
    stream_events,
    stream_fault,
)

__all__ = [
    "FAMILIES",
    "FILTER_MARKERS",
    "MARKERS",
    "ImageParams",
    "SimClock",
    "SimError",
    "SimStats",
    "Simulator",
    "SimulatorConfig",
    "check_request",
    "create_simulator",
    "main",
    "render_image",
]

# Model families, spelled as the service spells them (shared/models.py); the simulator keeps
# its own copy of the rules on purpose so that a bug in the service's rules is not mirrored here.
DALL_E_3 = "dall-e-3"
GPT_IMAGE_1 = "gpt-image-1"
GPT_IMAGE_1_MINI = "gpt-image-1-mini"
GPT_IMAGE_1_5 = "gpt-image-1.5"
GPT_IMAGE_2 = "gpt-image-2"
FAMILIES = frozenset({DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5, GPT_IMAGE_2})

MARKERS: dict[str, str] = {
    "[[filter:prompt]]": "400 content_policy_violation (current shape): prompt flagged, violence high, with revised_prompt",
    "[[filter:prompt:legacy]]": "400 contentFilter (legacy shape): 'Your task failed as a result of our safety system.'",
    "[[filter:image]]": "400 content_policy_violation (current shape): 'Generated image was filtered ...', sexual filtered; after the latency",
    "[[filter:image:legacy]]": "400 contentFilter (legacy shape): 'Generated image was filtered as a result of our safety system.'; after the latency",
    "[[hang]]": "the generation takes hang_seconds instead of the configured latency",
    "[[hang:S]]": "the generation takes S seconds (e.g. [[hang:2.5]])",
    "[[fail]]": "this request answers fail_status (500 InternalServerError by default)",
    "[[fail:STATUS]]": "this request answers STATUS (408, 409, 413, 422, 499, 500, 502, 503 or 504)",
}
FILTER_MARKERS: dict[str, Literal["prompt", "prompt:legacy", "image", "image:legacy"]] = {
    "[[filter:prompt]]": "prompt",
    "[[filter:prompt:legacy]]": "prompt:legacy",
    "[[filter:image]]": "image",
    "[[filter:image:legacy]]": "image:legacy",
}
_HANG = re.compile(r"\[\[hang(?::(\d+(?:\.\d+)?))?\]\]")
_FAIL = re.compile(r"\[\[fail(?::(\d{3}))?\]\]")
_ALL_MARKERS = re.compile(
    r"\[\[(?:filter:(?:prompt|image)(?::legacy)?|hang(?::[\d.]+)?|fail(?::\d{3})?|" + faults.PATTERN + "|" + STREAM_PATTERN + r")\]\]"
)
MARKERS.update(faults.MARKERS)
MARKERS.update(STREAM_MARKERS)

PROMPT_FILTERED = "Your task failed as a result of our safety system."
IMAGE_FILTERED = "Generated image was filtered as a result of our safety system."
PROMPT_REJECTED = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text that is not "
    "allowed by our safety system."
)
DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, "
    "please wait a moment and try again."
)
BAD_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource."
)
MISSING_KEY = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."
ENTRA_REFUSED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
POLICY_BLOCKED = (
    "Your resource has been temporarily blocked because we detected behavior that may violate our content policy. "
    "Please try again later."
)
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("InternalServerError", "The server had an error while processing your request."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
    504: ("GatewayTimeout", "The operation was timeout."),
}
# Other answers an upstream (or something in front of it) gives after the request arrived, which the service
# must never repeat: a timeout, a conflict, a body refused once read, a client-closed request (nginx).
FAULT_ANSWERS: dict[int, tuple[str, str]] = {
    408: ("Timeout", "The operation was timeout."),
    409: ("Conflict", "The request conflicts with the current state of the resource."),
    413: ("PayloadTooLarge", "The request is larger than the service accepts."),
    422: ("UnprocessableEntity", "The request could not be processed."),
    499: ("ClientClosedRequest", "The client closed the request before the server answered."),
    **SERVER_ERRORS,
}
_OPENAI_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"

ModelInBody = Literal["match", "reject", "ignore"]
Flavor = Literal["azure", "openai"]


_FLAGGED = {  # side -> (the legacy shape's message, the current shape's message, the category filtered)
    "prompt": (PROMPT_FILTERED, PROMPT_REJECTED, ("violence", "high")),
    "image": (IMAGE_FILTERED, IMAGE_FILTERED + " Try a different prompt.", ("sexual", "medium")),
}


def refuse_flagged(prompt: str, created: int, revised: str | None, side: Literal["prompt", "image"] = "prompt") -> None:
    """A prompt with a filter marker for ``side``: the 400 Azure answers for it (current or legacy shape)."""
    legacy, current, (category, severity) = _FLAGGED[side]
    if f"[[filter:{side}:legacy]]" in prompt:
        raise SimError(400, {"created": created, "error": {"code": "contentFilter", "message": legacy}}, outcome="filtered")
    if f"[[filter:{side}]]" in prompt:
        raise _azure_error(
            400,
            "content_policy_violation",
            current,
            outcome="filtered",
            type="invalid_request_error",
            param=None,
            inner_error={
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_results": _filter_results(category, severity),
                "revised_prompt": revised,
            },
        )


# --------------------------------------------------------------------------- configuration


@dataclass
class SimulatorConfig:
    """Everything the simulator does differently from the happy path. All fields have sane defaults.

    Changeable at runtime with ``POST /_sim/config`` (all but ``bearer_validator``) or
    :meth:`Simulator.update_config`.
    """

    # deployment name -> model family; a deployment named like a family is known anyway
    deployments: Mapping[str, str] = field(default_factory=dict)
    family_named_deployments: bool = True
    # auth: accepted ``api-key`` values (and ``Authorization: Bearer <key>`` on /v1 OpenAI paths)
    api_keys: Collection[str] = frozenset()
    # Entra tokens on Azure paths: validator(token) -> bool; if None, refused unless accept_any_bearer
    bearer_validator: Callable[[str], bool] | None = None
    accept_any_bearer: bool = False
    # None: check auth only if api_keys, bearer_validator or accept_any_bearer is set; True/False: force
    require_auth: bool | None = None
    # gpt-image on the deployment path needs api-version >= 2025-04-01-preview (GA <= 2024-10-21: DALL-E only)
    enforce_api_version: bool = True
    # a ``model`` in the body on the deployment path: "match" (404 unless it names the deployment, as
    # the openai SDK sends it), "reject" (404 whenever present, the field report) or "ignore"
    model_in_body: ModelInBody = "match"
    # seconds per generation: fixed, or uniform in [latency, latency_max]
    latency: float = 0.0
    latency_max: float | None = None
    # [[hang]] marker or the hang_next countdown: a generation that outlasts the client's timeout
    hang_seconds: float = 600.0
    hang_next: int = 0
    # end the sleep when the client disconnects (already billed; recorded as "abandoned", status 499),
    # so a hung generation does not outlive its client or hold up the server's shutdown
    stop_on_disconnect: bool = True
    # requests per window per deployment (0: unlimited); throttled requests do not use quota
    quota_requests: int = 0
    quota_window_seconds: float = 60.0
    # injected server errors: probability, countdown of the next N generation requests, status
    fail_rate: float = 0.0
    fail_next: int = 0
    fail_status: int = 500
    # 403 Forbidden "temporarily blocked" on every image call
    policy_blocked: bool = False
    # lifetime of dall-e-3 url results; base of those URLs ("" = the request's own base URL)
    url_ttl_seconds: float = 86400.0
    public_base_url: str = ""
    # how many recent requests /_sim/stats keeps; image variants rendered per size/format
    recent_limit: int = 100
    image_variants: int = 3
    # render the common 1024x1024 PNG at startup (in a background thread)
    prewarm: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float | None = None, *, strict_low: bool = False) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if value < low or (strict_low and value == low) or (high is not None and value > high):
                raise ValueError(f"{name} must be {'>' if strict_low else '>='} {low}" + (f" and <= {high}" if high is not None else "") + f", got {value!r}")
            return float(value)

        def integer(name: str, low: int) -> int:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            return value

        def flag(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

        if not isinstance(self.deployments, Mapping):
            raise ValueError("deployments must map deployment names to model families")
        for name, family in self.deployments.items():
            if not isinstance(name, str) or not name or family not in FAMILIES:
                raise ValueError(f"deployments: {name!r} -> {family!r}; the family must be one of {', '.join(sorted(FAMILIES))}")
        self.deployments = dict(self.deployments)
        if isinstance(self.api_keys, str) or not all(isinstance(k, str) and k for k in self.api_keys):
            raise ValueError("api_keys must be a collection of non-empty strings")
        self.api_keys = frozenset(self.api_keys)
        if self.bearer_validator is not None and not callable(self.bearer_validator):
            raise ValueError("bearer_validator must be callable(token) -> bool or None")
        if self.require_auth is not None:
            flag("require_auth")
        for name in ("family_named_deployments", "accept_any_bearer", "enforce_api_version", "stop_on_disconnect", "policy_blocked", "prewarm"):
            flag(name)
        if self.model_in_body not in ("match", "reject", "ignore"):
            raise ValueError(f"model_in_body must be match, reject or ignore, got {self.model_in_body!r}")
        self.latency = number("latency", 0)
        if self.latency_max is not None:
            self.latency_max = number("latency_max", self.latency)
        self.hang_seconds = number("hang_seconds", 0)
        self.hang_next = integer("hang_next", 0)
        self.quota_requests = integer("quota_requests", 0)
        self.quota_window_seconds = number("quota_window_seconds", 0, strict_low=True)
        self.fail_rate = number("fail_rate", 0, 1)
        self.fail_next = integer("fail_next", 0)
        if self.fail_status not in FAULT_ANSWERS or isinstance(self.fail_status, bool):
            raise ValueError(f"fail_status must be one of {sorted(FAULT_ANSWERS)}, got {self.fail_status!r}")
        self.url_ttl_seconds = number("url_ttl_seconds", 0, strict_low=True)
        if not isinstance(self.public_base_url, str):
            raise ValueError("public_base_url must be a string")
        self.public_base_url = self.public_base_url.rstrip("/")
        self.recent_limit = integer("recent_limit", 0)
        self.image_variants = integer("image_variants", 1)
        if self.seed is not None:
            integer("seed", -(2**63))

    @property
    def auth_enabled(self) -> bool:
        """Whether image requests must authenticate (see ``require_auth``)."""
        if self.require_auth is not None:
            return self.require_auth
        return bool(self.api_keys) or self.bearer_validator is not None or self.accept_any_bearer

    def family_of(self, deployment: str) -> str | None:
        """The model family behind a deployment name, or None if there is no such deployment."""
        family = self.deployments.get(deployment)
        if family is None and self.family_named_deployments and deployment in FAMILIES:
            family = deployment
        return family

    def public(self) -> dict[str, Any]:
        """The configuration as JSON, secrets redacted."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_keys":
                value = [_redact_secret(k) for k in sorted(value)]
            elif f.name == "bearer_validator":
                value = None if value is None else getattr(value, "__name__", "callable")
            elif f.name == "deployments":
                value = dict(value)
            out[f.name] = value
        out["auth_enabled"] = self.auth_enabled
        return out


_CONFIG_FIELDS = frozenset(f.name for f in fields(SimulatorConfig))


def _config_changes(data: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a partial JSON update into dataclass changes; raise ValueError on unknown fields."""
    changes: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _CONFIG_FIELDS or name == "bearer_validator":
            raise ValueError(f"unknown or unsettable config field {name!r}; settable: {', '.join(sorted(_CONFIG_FIELDS - {'bearer_validator'}))}")
        if name == "latency" and isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError("latency must be seconds or [min, max]")
            changes["latency"], changes["latency_max"] = value
        elif name == "latency":
            changes["latency"] = value
            changes.setdefault("latency_max", data.get("latency_max"))
        elif name == "api_keys":
            if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
                raise ValueError("api_keys must be a list of strings")
            changes[name] = frozenset(value)
        else:
            changes[name] = value
    return changes


# --------------------------------------------------------------------------- errors


class SimError(Exception):
    """A non-200 answer: status, JSON (or XML) body, headers, and how stats count it."""

    def __init__(self, status: int, body: dict[str, Any], *, headers: Mapping[str, str] | None = None, outcome: str = "rejected") -> None:
        super().__init__(json.dumps(body))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.outcome = outcome

    def response(self) -> Response:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def _azure_error(status: int, code: str, message: str, *, outcome: str = "rejected", **extra: Any) -> SimError:
    return SimError(status, {"error": {"code": code, "message": message, **extra}}, outcome=outcome)


def _openai_error(status: int, code: str | None, message: str, type_: str, *, param: str | None = None, outcome: str = "rejected") -> SimError:
    return SimError(status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, outcome=outcome)


def _invalid(param: str | None, message: str, code: str = "invalid_value") -> SimError:
    return SimError(400, {"error": {"code": code, "message": message, "param": param, "type": "invalid_request_error"}})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _one_of(options: Iterable[str]) -> str:
    quoted = [f"'{o}'" for o in options]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class ImageParams:
    """A request that passed the family's rules."""

    family: str
    prompt: str
    n: int
    size: str  # as asked ("auto" included)
    width: int
    height: int
    quality: str
    style: str | None  # dall-e-3 only
    response_format: Literal["url", "b64_json"]  # gpt-image: always b64_json
    output_format: Literal["png", "jpeg"]
    output_compression: int | None
    background: str
    stream: bool = False  # gpt-image only: server-sent events (local/sim_stream.py)
    partial_images: int = 0

    @property
    def jpeg_quality(self) -> int:
        """Pillow quality for output_compression (100 = best; Pillow advises <= 95)."""
        return max(1, min(95, 100 if self.output_compression is None else self.output_compression))


_COMMON_PARAMS = frozenset({"prompt", "model", "n", "size", "quality", "user"})
_DALLE_PARAMS = _COMMON_PARAMS | {"style", "response_format"}
_GPT_PARAMS = _COMMON_PARAMS | {"output_format", "output_compression", "background", "moderation", "stream", "partial_images"}
DALLE_SIZES = ("1024x1024", "1792x1024", "1024x1792")
GPT_IMAGE_1_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
GPT_IMAGE_2_MIN_PIXELS = 655_360
GPT_IMAGE_2_MAX_PIXELS = 8_294_400
GPT_IMAGE_2_MAX_EDGE = 3840  # exclusive
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")  # fullmatch


def _integer(body: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"Invalid type for '{name}': expected an integer, but got {_json_type(value)} instead.", "invalid_type")
    if value < low:
        raise _invalid(
            name,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
            "integer_below_min_value",
        )
    if value > high:
        raise _invalid(
            name,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got {value} instead.",
            "integer_above_max_value",
        )
    return value


def _choice(body: Mapping[str, Any], name: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid(name, f"Invalid type for '{name}': expected a string, but got {_json_type(value)} instead.", "invalid_type")
    if value not in options:
        raise _invalid(name, f"Invalid value: '{value}'. Supported values are: {_one_of(options)}.")
    return value


def _gpt_image_2_size(size: str) -> tuple[int, int]:
    """gpt-image-2: edges multiples of 16, long edge < 3840, ratio <= 3:1, 655,360-8,294,400 pixels."""
    match = _SIZE.fullmatch(size)
    if not match:
        raise _invalid("size", f"Invalid value: '{size}'. Supported values are: 'auto' or 'WIDTHxHEIGHT' (e.g. '1536x1024').")
    width, height = int(match[1]), int(match[2])
    long_edge, short_edge = max(width, height), min(width, height)
    if width % 16 or height % 16:
        raise _invalid("size", f"Invalid size '{size}'. Width and height must both be multiples of 16.")
    if long_edge >= GPT_IMAGE_2_MAX_EDGE:
        raise _invalid("size", f"Invalid size '{size}'. The longest edge must be less than {GPT_IMAGE_2_MAX_EDGE} pixels.")
    if long_edge > 3 * short_edge:
        raise _invalid("size", f"Invalid size '{size}'. The aspect ratio (long edge to short edge) must not exceed 3:1.")
    if not GPT_IMAGE_2_MIN_PIXELS <= width * height <= GPT_IMAGE_2_MAX_PIXELS:
        raise _invalid(
            "size",
            f"Invalid size '{size}'. The total number of pixels must be between "
            f"{GPT_IMAGE_2_MIN_PIXELS:,} and {GPT_IMAGE_2_MAX_PIXELS:,}, got {width * height:,}.",
        )
    return width, height


def check_request(family: str, body: Mapping[str, Any]) -> ImageParams:
    """Apply ``family``'s rules to a request body; raise :class:`SimError` (400) like the real API."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}")
    dalle = family == DALL_E_3
    allowed = _DALLE_PARAMS if dalle else _GPT_PARAMS
    for key in body:
        if key not in allowed:
            raise _invalid(key, f"Unknown parameter: '{key}'.", "unknown_parameter")

    prompt = body.get("prompt")
    if prompt is None:
        raise _invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise _invalid("prompt", f"Invalid type for 'prompt': expected a string, but got {_json_type(prompt)} instead.", "invalid_type")
    if not prompt:
        raise _invalid(
            "prompt", "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead.", "empty_string"
        )
    limit = 4000 if dalle else 32000
    if len(prompt) > limit:
        raise _invalid(
            "prompt",
            f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(prompt)} instead.",
            "string_above_max_length",
        )
    for name in ("model", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _invalid(name, f"Invalid type for '{name}': expected a string, but got {_json_type(body[name])} instead.", "invalid_type")

    n = _integer(body, "n", 1, 1, 1 if dalle else 10)
    assert n is not None

    partial_images, stream = 0, None
    if dalle:
        size = _choice(body, "size", DALLE_SIZES, "1024x1024")
        quality = _choice(body, "quality", ("standard", "hd"), "standard")
        style: str | None = _choice(body, "style", ("vivid", "natural"), "vivid")
        response_format = _choice(body, "response_format", ("url", "b64_json"), "url")
        output_format, compression, background = "png", None, "auto"
    else:
        if family == GPT_IMAGE_2:
            size = body.get("size") or "auto"
            if not isinstance(size, str):
                raise _invalid("size", f"Invalid type for 'size': expected a string, but got {_json_type(size)} instead.", "invalid_type")
            if size != "auto":
                _gpt_image_2_size(size)
        else:
            size = _choice(body, "size", GPT_IMAGE_1_SIZES, "auto")
        quality = _choice(body, "quality", ("low", "medium", "high", "auto"), "auto")
        style, response_format = None, "b64_json"
        output_format = _choice(body, "output_format", ("png", "jpeg"), "png")
        compression = _integer(body, "output_compression", None, 0, 100)
        if compression is not None and output_format != "jpeg":
            raise _invalid(
                "output_compression",
                f"Invalid value for 'output_compression': compression is only supported with output_format 'jpeg', got '{output_format}'.",
            )
        background = _choice(body, "background", ("auto", "opaque", "transparent"), "auto")
        if background == "transparent" and output_format != "png":
            raise _invalid("background", f"Transparent background is only supported with output_format 'png', got '{output_format}'.")
        _choice(body, "moderation", ("low", "auto"), "auto")
        partial_images = _integer(body, "partial_images", 0, 0, 3) or 0
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _invalid("stream", f"Invalid type for 'stream': expected a boolean, but got {_json_type(stream)} instead.", "invalid_type")

    width, height = (1024, 1024) if size == "auto" else (int(size.split("x")[0]), int(size.split("x")[1]))
    return ImageParams(
        family=family,
        prompt=prompt,
        n=n,
        size=size,
        width=width,
        height=height,
        quality=quality,
        style=style,
        response_format=response_format,  # type: ignore[arg-type]
        output_format=output_format,  # type: ignore[arg-type]
        output_compression=compression,
        background=background,
        stream=bool(stream),
        partial_images=partial_images,
    )


_TOKENS_PER_MEGAPIXEL = {"low": 272, "medium": 1056, "high": 4160}  # gpt-image-1 output tokens at 1024x1024


def _usage(params: ImageParams) -> dict[str, Any]:
    text_tokens = max(1, math.ceil(len(params.prompt) / 4))
    per_image = _TOKENS_PER_MEGAPIXEL.get(params.quality, _TOKENS_PER_MEGAPIXEL["medium"])
    output = round(per_image * params.width * params.height / (1024 * 1024)) * params.n
    return {
        "input_tokens": text_tokens,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
        "output_tokens": output,
        "total_tokens": text_tokens + output,
    }


def _revised_prompt(params: ImageParams) -> str:
    prompt = " ".join(_ALL_MARKERS.sub(" ", params.prompt).split()) or "An image"
    tone = "vivid, dramatic lighting and saturated colors" if params.style != "natural" else "natural light and true-to-life colors"
    return f"{prompt.rstrip('.')}. Rendered in rich detail with {tone}."


def _filter_results(flagged: str | None = None, severity: str = "high", *, prompt: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {
        name: {"filtered": name == flagged, "severity": severity if name == flagged else "safe"}
        for name in ("hate", "self_harm", "sexual", "violence")
    }
    if prompt:
        results["jailbreak"] = {"filtered": False, "detected": False}
        results["profanity"] = {"filtered": False, "detected": False}
    return results


# --------------------------------------------------------------------------- images


def render_image(width: int, height: int, fmt: str = "png", *, quality: int = 95, transparent: bool = False, seed: int = 0) -> bytes:
    """A real PNG or JPEG of width x height: gradients and shapes under low-amplitude noise.

    The noise keeps PNG from compressing to nothing: a 1024x1024 PNG weighs about 2.3 MB, a
    JPEG about 0.5 MB at quality 95. Takes ~0.15 s for 1024x1024, ~1 s at 8 megapixels.
    """
    rng = random.Random(seed)
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    hue = rng.randrange(3)
    channels = [across, down, ImageChops.invert(across)]
    image = Image.merge("RGB", tuple(channels[hue:] + channels[:hue]))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(width // 8 + 1, width // 2 + 2), y0 + rng.randrange(height // 8 + 1, height // 2 + 2)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3).translate(_NOISE_MASK))
    image = ImageChops.add(image, noise, 1.0, -16)
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        if transparent:
            alpha = ImageChops.invert(Image.radial_gradient("L")).resize((width, height))
            image.putalpha(alpha.point(lambda v: 0 if v < 96 else min(255, (v - 96) * 3)))
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


_NOISE_MASK = bytes(b & 0x1F for b in range(256))
ImageKey = tuple[int, int, str, int, bool]  # width, height, format, jpeg quality (0 for png), transparent


class _Rendered:
    """A cached image and where a per-result segment goes (after IHDR / after JFIF APP0)."""

    def __init__(self, data: bytes, fmt: str) -> None:
        self.data = data
        self.fmt = fmt
        if fmt == "png":
            assert data[12:16] == b"IHDR"
            self.insert_at = 33  # 8-byte signature + 25-byte IHDR chunk
        else:
            assert data[:2] == b"\xff\xd8"
            self.insert_at = 4 + int.from_bytes(data[4:6], "big") if data[2:4] == b"\xff\xe0" else 2
        self._tail_b64: bytes | None = None

    @property
    def tail_b64(self) -> bytes:
        """base64 of everything after the insertion point, computed once."""
        if self._tail_b64 is None:
            self._tail_b64 = base64.b64encode(self.data[self.insert_at :])
        return self._tail_b64

    def unique(self, tag: str) -> _Result:
        """This image with its own metadata segment; head length is a multiple of 3 so base64 splices."""
        text = tag.encode("ascii", "replace")
        overhead = 12 + len(b"simulator\x00") if self.fmt == "png" else 4
        text += b" " * (-(self.insert_at + overhead + len(text)) % 3)
        if self.fmt == "png":
            payload = b"simulator\x00" + text
            segment = struct.pack(">I", len(payload)) + b"tEXt" + payload + struct.pack(">I", zlib.crc32(b"tEXt" + payload))
        else:
            segment = b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text
        return _Result(self, self.data[: self.insert_at] + segment)


@dataclass(frozen=True)
class _Result:
    base: _Rendered
    head: bytes

    @property
    def content_type(self) -> str:
        return "image/png" if self.base.fmt == "png" else "image/jpeg"

    def to_bytes(self) -> bytes:
        return self.head + self.base.data[self.base.insert_at :]

    def b64(self) -> bytes:
        return base64.b64encode(self.head) + self.base.tail_b64

    def __len__(self) -> int:
        return len(self.head) + len(self.base.data) - self.base.insert_at


class _ImageCache:
    """Rendered variants per ImageKey, shared by every simulator in the process, bounded by bytes."""

    def __init__(self, max_bytes: int = 384 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[ImageKey, list[_Rendered]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[ImageKey, threading.Lock] = {}
        self._filling: set[ImageKey] = set()

    def peek(self, key: ImageKey) -> list[_Rendered] | None:
        with self._lock:
            got = self._entries.get(key)
            if got is not None:
                self._entries.move_to_end(key)
            return got

    def _render(self, key: ImageKey, index: int) -> _Rendered:
        width, height, fmt, quality, transparent = key
        seed = zlib.crc32(repr((key, index)).encode())
        return _Rendered(render_image(width, height, fmt, quality=quality, transparent=transparent, seed=seed), fmt)

    def _add(self, key: ImageKey, rendered: _Rendered) -> list[_Rendered]:
        with self._lock:
            variants = self._entries.setdefault(key, [])
            variants.append(rendered)
            self._entries.move_to_end(key)
            total = sum(len(r.data) for vs in self._entries.values() for r in vs)
            while total > self.max_bytes and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                total -= sum(len(r.data) for r in dropped)
            return variants

    def get_blocking(self, key: ImageKey) -> list[_Rendered]:
        """The variants of key, rendering the first one now if needed (call from a thread)."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            got = self.peek(key)
            if got:
                return got
            return self._add(key, self._render(key, 0))

    def fill(self, key: ImageKey, wanted: int) -> None:
        """Render variants of key in a background thread, up to ``wanted``."""
        with self._lock:
            if len(self._entries.get(key, ())) >= wanted or key in self._filling:
                return
            self._filling.add(key)

        def run() -> None:
            try:
                self.get_blocking(key)  # the first one under the key's lock, shared with requests
                while True:
                    with self._lock:
                        have = len(self._entries.get(key, ()))
                    if have >= wanted:
                        break
                    self._add(key, self._render(key, have))
            finally:
                with self._lock:
                    self._filling.discard(key)

        threading.Thread(target=run, name="simulator-render", daemon=True).start()

    async def variants(self, key: ImageKey, wanted: int) -> list[_Rendered]:
        got = self.peek(key)
        if not got:
            got = await asyncio.to_thread(self.get_blocking, key)
        if len(got) < wanted:
            self.fill(key, wanted)
        return got


IMAGE_CACHE = _ImageCache()


def _image_key(params: ImageParams) -> ImageKey:
    if params.output_format == "jpeg":
        return (params.width, params.height, "jpeg", params.jpeg_quality, False)
    return (params.width, params.height, "png", 0, params.background == "transparent")


# --------------------------------------------------------------------------- time


class SimClock:
    """The simulator's time (epoch seconds): URL expiry, quota windows, ``created`` stamps.

    Real time by default. Tests move it instead of sleeping: :meth:`advance` jumps ahead,
    :meth:`freeze` stops it (a quota window then never ends by itself), :meth:`real` goes
    back to the real time. Thread-safe: the test and the server thread share it.
    Generation latency stays real time (``POST /_sim/release`` ends it early).
    """

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self._offset = 0.0
        self._frozen_at: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        """The simulated time, in seconds since the epoch."""
        with self._lock:
            return self._frozen_at if self._frozen_at is not None else self._source() + self._offset

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (frozen or not); returns the new time."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < math.inf:
            raise ValueError(f"advance must be a number of seconds >= 0, got {seconds!r}")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
        return self.now()

    def freeze(self) -> float:
        """Stop time at its current reading; returns it."""
        now = self.now()
        with self._lock:
            self._frozen_at = now
        return now

    def unfreeze(self) -> None:
        """Let time run again from where it stands."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - self._source()
                self._frozen_at = None

    def real(self) -> None:
        """Back to the real time: no offset, not frozen."""
        with self._lock:
            self._offset, self._frozen_at = 0.0, None

    def public(self) -> dict[str, Any]:
        """The clock as JSON."""
        now = self.now()
        with self._lock:
            frozen, offset = self._frozen_at is not None, self._offset
        return {"now": now, "iso": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"), "frozen": frozen, "offset": offset}


# --------------------------------------------------------------------------- blobs (dall-e-3 url results)


def _sas_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_sas_time(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _blob_error(status: int, code: str, message: str, detail: str | None = None, *, at: float) -> Response:
    now = datetime.fromtimestamp(at, UTC)
    text = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}\nRequestId:{uuid.uuid4()}\nTime:{now.strftime('%Y-%m-%dT%H:%M:%S.%f')}0Z</Message>"
        + (f"<AuthenticationErrorDetail>{detail}</AuthenticationErrorDetail>" if detail else "")
        + "</Error>"
    )
    return Response(text, status_code=status, media_type="application/xml", headers={"x-ms-error-code": code})


def _http_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


@dataclass
class _Blob:
    image: _Result
    created: float
    expires: float  # whole second, the same instant as the URL's se


class _BlobStore:
    """dall-e-3 url results in memory (a reference to the cached render plus the unique head)."""

    def __init__(self, clock: SimClock, max_blobs: int = 20_000) -> None:
        self.clock = clock
        self.max_blobs = max_blobs
        self._blobs: OrderedDict[str, _Blob] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image: _Result, ttl: float) -> tuple[str, float]:
        now = self.clock.now()
        expires = float(math.ceil(now + ttl))
        blob_id = uuid.uuid4().hex
        with self._lock:
            self._evict(now)
            self._blobs[blob_id] = _Blob(image, now, expires)
            while len(self._blobs) > self.max_blobs:
                self._blobs.popitem(last=False)
        return blob_id, expires

    def get(self, blob_id: str) -> _Blob | None:
        with self._lock:
            self._evict(self.clock.now())
            return self._blobs.get(blob_id)

    def _evict(self, now: float) -> None:
        expired = [k for k, b in self._blobs.items() if b.expires <= now]
        for k in expired:
            del self._blobs[k]

    def __len__(self) -> int:
        return len(self._blobs)


# --------------------------------------------------------------------------- stats


@dataclass
class SimStats:
    """What happened since the last reset; ``GET /_sim/stats`` serves :meth:`as_dict`."""

    requests: int = 0  # image API calls, whatever the answer
    generations: int = 0  # billed: work started (see the module docstring)
    succeeded: int = 0  # 200 answers
    throttled: int = 0  # 429
    failed: int = 0  # injected error answers ([[fail]], fail_next, fail_rate: 5xx, 408...)
    filtered: int = 0  # content filter answers (prompt or image)
    rejected: int = 0  # 400 rules, 404 deployment/model/route
    unauthorized: int = 0  # 401
    blocked: int = 0  # 403 policy block
    in_flight: int = 0  # generations sleeping right now
    max_in_flight: int = 0  # the most generations at work at once since the last reset
    abandoned: int = 0  # billed generations whose client went away before the answer
    images: int = 0  # images returned
    edits: int = 0  # billed edits (local/sim_edits.py); also counted in generations
    blobs_served: int = 0
    blobs_refused: int = 0  # expired or bad SAS
    deployments: dict[str, int] = field(default_factory=dict)  # deployment -> generations
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("deployments", "recent")}
        out["deployments"] = dict(self.deployments)
        out["recent"] = copy.deepcopy(list(self.recent))
        return out


_SECRET_HEADERS = frozenset({"api-key", "authorization", "ocp-apim-subscription-key", "cookie", "x-functions-key"})


def _redact_secret(value: str) -> str:
    return f"***{value[-4:]}" if len(value) >= 16 else "***"


def _redacted_headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        if name in _SECRET_HEADERS:
            scheme, _, secret = value.partition(" ")
            value = f"{scheme} {_redact_secret(secret)}" if name == "authorization" and secret else _redact_secret(value)
        out[name] = value
    return out


def _bounded(value: Any, limit: int = 500) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"...(+{len(value) - limit} chars)"
    if isinstance(value, dict):
        return {k: _bounded(v, limit) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_bounded(v, limit) for v in value[:50]]
    return value


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """The simulator's state and request handling; ``app.state.sim`` of :func:`create_simulator`."""

    def __init__(self, config: SimulatorConfig | None = None, *, clock: SimClock | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.clock = clock if clock is not None else SimClock()
        self.stats = SimStats(recent=deque(maxlen=self.config.recent_limit))
        self.images = IMAGE_CACHE
        self.blobs = _BlobStore(self.clock)
        self._windows: dict[str, deque[float]] = {}
        self._rng = random.Random(self.config.seed)
        self._counter = itertools.count()
        self._lock = threading.RLock()
        # Notified whenever a counter changes, so waiters wake on the event instead of polling.
        self._changed = threading.Condition()
        # Generations at work, each with the event that ends its latency early (see release()).
        self._working: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    # ---- control

    def update_config(self, changes: Mapping[str, Any] | None = None, **more: Any) -> SimulatorConfig:
        """Partial update (JSON field names; ``latency`` may be [min, max]); ValueError if invalid."""
        data = {**(changes or {}), **more}
        if "bearer_validator" in data:  # in-process callers may set it; HTTP cannot
            validator = data.pop("bearer_validator")
            parsed = {**_config_changes(data), "bearer_validator": validator}
        else:
            parsed = _config_changes(data)
        with self._lock:
            new = replace(self.config, **parsed)
            if new.recent_limit != self.config.recent_limit:
                self.stats.recent = deque(self.stats.recent, maxlen=new.recent_limit)
            if "seed" in parsed:
                self._rng = random.Random(new.seed)
            self.config = new
        return new

    def reset(self) -> None:
        """Zero the stats and the quota windows, and put the clock back to real time (configuration and stored blobs stay)."""
        with self._lock:
            in_flight = self.stats.in_flight
            self.stats = SimStats(recent=deque(maxlen=self.config.recent_limit), in_flight=in_flight, max_in_flight=in_flight)
            self._windows.clear()
            self.clock.real()
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        """The stats as JSON (``GET /_sim/stats``)."""
        with self._lock:
            out = self.stats.as_dict()
        out["blobs_stored"] = len(self.blobs)
        return out

    def release(self) -> int:
        """End the latency (or hang) of every generation at work now, as if it had passed; returns how many.

        Callable from any thread. With a long ``latency``, ``hang_next`` or a ``[[hang]]`` marker this
        is a gate: a test holds generations in flight, acts, then lets them finish.
        """
        with self._lock:
            working = list(self._working)
        for loop, released in working:
            loop.call_soon_threadsafe(released.set)
        return len(working)

    def wait_for(self, at_least: Mapping[str, int] | None = None, at_most: Mapping[str, int] | None = None, timeout: float = 10.0) -> tuple[bool, dict[str, Any]]:
        """Block until every counter named in ``at_least`` / ``at_most`` is within bounds, or ``timeout`` passes.

        Returns (met, snapshot). Wakes on each change of the stats, not on a timer. Raises
        ValueError for a name that is not a counter of :meth:`snapshot`.
        """
        lows, highs = dict(at_least or {}), dict(at_most or {})
        counters = {k for k, v in self.snapshot().items() if isinstance(v, int)}
        for name, bound in [*lows.items(), *highs.items()]:
            if name not in counters or isinstance(bound, bool) or not isinstance(bound, int):
                raise ValueError(f"wait: {name!r} must name a counter ({', '.join(sorted(counters))}) and its bound an integer")

        def met(stats: dict[str, Any]) -> bool:
            return all(stats[k] >= v for k, v in lows.items()) and all(stats[k] <= v for k, v in highs.items())

        deadline = time.monotonic() + timeout
        with self._changed:
            while not met(stats := self.snapshot()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, stats
                self._changed.wait(left)
        return True, stats

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    @contextlib.contextmanager
    def _at_work(self) -> Iterator[asyncio.Event]:
        """Count a generation in flight while it works, releasable by :meth:`release`."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._working.add(entry)
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        self._notify()
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._working.discard(entry)
                self.stats.in_flight -= 1
            self._notify()

    # ---- routes

    async def deployment_route(self, request: Request) -> Response:
        return await self._serve(request, "deployment", request.path_params["deployment"])

    async def v1_route(self, request: Request) -> Response:
        return await self._serve(request, "v1", None)

    async def openai_route(self, request: Request) -> Response:
        return await self._serve(request, "openai", None)

    async def stats_route(self, request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def config_route(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("send a JSON object of config fields")
                if "bearer_validator" in data:
                    raise ValueError("bearer_validator is a callable: set it in process (app.state.sim.update_config)")
                self.update_config(data)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": {"code": "invalid_config", "message": str(exc)}}, status_code=400)
        return JSONResponse(self.config.public())

    async def reset_route(self, request: Request) -> Response:
        self.reset()
        return JSONResponse(self.snapshot())

    async def clock_route(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict) or not set(data) <= {"real", "frozen", "advance"}:
                    raise ValueError('send a JSON object with "real": true, "frozen": true|false and/or "advance": seconds')
                if data.get("real"):
                    self.clock.real()
                if data.get("frozen") is True:
                    self.clock.freeze()
                elif data.get("frozen") is False:
                    self.clock.unfreeze()
                if "advance" in data:
                    self.clock.advance(data["advance"])
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": {"code": "invalid_clock", "message": str(exc)}}, status_code=400)
        return JSONResponse(self.clock.public())

    async def wait_route(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict) or not set(data) <= {"at_least", "at_most", "timeout"}:
                raise ValueError('send a JSON object: {"at_least": {counter: n}, "at_most": {counter: n}, "timeout": seconds}')
            timeout = float(data.get("timeout", 10.0))
            met, stats = await asyncio.to_thread(self.wait_for, data.get("at_least"), data.get("at_most"), min(timeout, 300.0))
        except (ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": {"code": "invalid_wait", "message": str(exc)}}, status_code=400)
        return JSONResponse(stats, status_code=200 if met else 408)

    async def release_route(self, request: Request) -> Response:
        return JSONResponse({"released": self.release()})

    async def health_route(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def blob_route(self, request: Request) -> Response:
        response = self._blob(request)
        self._notify()
        return response

    def _blob(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        blob_id, _, ext = name.partition(".")
        se, sig = request.query_params.get("se"), request.query_params.get("sig")
        expiry = _parse_sas_time(se) if se else None
        refused = "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."
        now = self.clock.now()
        blob = self.blobs.get(blob_id)
        if sig != "sim" or expiry is None or (blob is not None and blob.expires != expiry):  # a changed se breaks the signature
            self.stats.blobs_refused += 1
            return _blob_error(
                403, "AuthenticationFailed", refused, "Signature fields not well formed." if expiry is None else "Signature did not match.", at=now
            )
        if now >= expiry:
            self.stats.blobs_refused += 1
            start = blob.created if blob is not None else expiry - self.config.url_ttl_seconds
            return _blob_error(
                403,
                "AuthenticationFailed",
                refused,
                f"Signature not valid in the specified time frame: Start [{_http_date(start)}] - Expiry [{_http_date(expiry)}] - Current [{_http_date(now)}]",
                at=now,
            )
        if blob is None or ext not in ("png", "jpg", "jpeg"):
            return _blob_error(404, "BlobNotFound", "The specified blob does not exist.", at=now)
        self.stats.blobs_served += 1
        data = blob.image.to_bytes()
        return Response(
            data,
            media_type=blob.image.content_type,
            headers={
                "x-ms-blob-type": "BlockBlob",
                "x-ms-version": "2020-10-02",
                "ETag": f'"0x{zlib.crc32(blob.image.head):08X}"',
                "Last-Modified": _http_date(blob.created),
                "Accept-Ranges": "bytes",
            },
        )

    # ---- the generation path

    async def _serve(self, request: Request, style: Literal["deployment", "v1", "openai"], path_deployment: str | None) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        raw = await request.body()
        self.stats.requests += 1
        entry: dict[str, Any] = {
            "id": request_id,
            "at": datetime.fromtimestamp(self.clock.now(), UTC).isoformat(timespec="milliseconds"),
            "method": request.method,
            "path": request.url.path,
            "query": str(request.url.query),
            "style": style,
            "deployment": path_deployment,
            "family": None,
            "headers": _redacted_headers(request),
            "body": None,
            "status": None,
            "outcome": None,
        }
        try:
            entry["body"] = _bounded(json.loads(raw)) if raw else None
        except ValueError:
            entry["body"] = _bounded(raw.decode("utf-8", "replace"))
        self.stats.recent.append(entry)
        headers = {"x-request-id": request_id, "apim-request-id": request_id}
        if client_id := request.headers.get("x-ms-client-request-id"):
            headers["x-ms-client-request-id"] = client_id
        try:
            response = await self._generate(request, raw, style, path_deployment, entry, headers)
            outcome = "ok"
        except SimError as exc:
            response = exc.response()
            outcome = exc.outcome
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        response.headers.update(headers)
        response.headers["openai-processing-ms"] = str(round((time.perf_counter() - started) * 1000))
        entry["status"], entry["outcome"] = response.status_code, outcome
        self._notify()
        return response

    def _check_auth(self, request: Request, style: Literal["deployment", "v1", "openai"]) -> None:
        cfg = self.config
        flavor: Flavor = "openai" if style == "openai" else "azure"
        if not cfg.auth_enabled:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if flavor == "openai":
            if bearer is not None and bearer in cfg.api_keys:
                return
            if bearer is None:
                message = (
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
                raise _openai_error(401, None, message, "invalid_request_error", outcome="unauthorized")
            shown = f"{bearer[:3]}...{bearer[-4:]}" if len(bearer) > 8 else "***"
            raise _openai_error(
                401,
                "invalid_api_key",
                f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                outcome="unauthorized",
            )
        key = request.headers.get("api-key")
        if key is not None:
            if key in cfg.api_keys:
                return
            raise _azure_error(401, "401", BAD_KEY, outcome="unauthorized")
        if bearer is not None:
            if style == "v1" and bearer in cfg.api_keys:
                return  # the v1 API takes the key as a bearer token: OpenAI(base_url=.../openai/v1/, api_key=KEY)
            if cfg.bearer_validator is not None:
                ok = bool(cfg.bearer_validator(bearer))
            else:
                ok = cfg.accept_any_bearer
            if ok:
                return
            raise _azure_error(401, "401", ENTRA_REFUSED, outcome="unauthorized")
        raise _azure_error(401, "401", MISSING_KEY, outcome="unauthorized")

    def _check_api_version(self, request: Request) -> str:
        version = request.query_params.get("api-version", "").strip()
        if not version:
            raise _azure_error(
                400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."
            )
        if self.config.enforce_api_version and not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", version):
            raise _azure_error(404, "404", "Resource not found")
        return version

    def _quota(self, key: str, api_version: str, flavor: Flavor) -> dict[str, str]:
        """Record one request in key's window or raise 429; returns rate-limit headers for success."""
        cfg = self.config
        if cfg.quota_requests <= 0:
            return {}
        now = self.clock.now()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - cfg.quota_window_seconds:
            window.popleft()
        if len(window) >= cfg.quota_requests:
            wait = window[len(window) - cfg.quota_requests] + cfg.quota_window_seconds - now
            seconds = max(1, math.ceil(wait))
            body: dict[str, Any]
            if flavor == "openai":
                message = (
                    f"Rate limit exceeded for images per minute in organization org-simulator. Limit: {cfg.quota_requests}/"
                    f"{cfg.quota_window_seconds:g}s. Current: {len(window) + 1}. Please try again in {seconds}s."
                )
                body = {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
            else:
                message = (
                    f"Requests to the Images_Generations Operation under Azure OpenAI API version {api_version} have exceeded "
                    f"call rate limit of your current AIServices S0 pricing tier. Please retry after {seconds} seconds. "
                    "Please contact Azure support service if you would like to further increase the default rate limit."
                )
                body = {"error": {"code": "429", "message": message}}
            raise SimError(
                429,
                body,
                headers={"Retry-After": str(seconds), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))},
                outcome="throttled",
            )
        window.append(now)
        return {
            "x-ratelimit-limit-requests": str(cfg.quota_requests),
            "x-ratelimit-remaining-requests": str(cfg.quota_requests - len(window)),
        }

    def _fault(self, prompt: str, flavor: Flavor) -> None:
        cfg = self.config
        status: int | None = None
        marker = _FAIL.search(prompt)
        if marker:
            status = int(marker[1]) if marker[1] and int(marker[1]) in FAULT_ANSWERS else cfg.fail_status
        elif cfg.fail_next > 0:
            cfg.fail_next -= 1
            status = cfg.fail_status
        elif cfg.fail_rate > 0 and self._rng.random() < cfg.fail_rate:
            status = cfg.fail_status
        if status is None:
            return
        if flavor == "openai":
            raise _openai_error(status, None, _OPENAI_SERVER_ERROR, "server_error", outcome="failed")
        code, message = FAULT_ANSWERS[status]
        raise _azure_error(status, code, message, outcome="failed")

    def _delay(self, prompt: str) -> float:
        cfg = self.config
        hang = _HANG.search(prompt)
        if hang:
            return float(hang[1]) if hang[1] else cfg.hang_seconds
        if cfg.hang_next > 0:
            cfg.hang_next -= 1
            return cfg.hang_seconds
        if cfg.latency_max is not None and cfg.latency_max > cfg.latency:
            return self._rng.uniform(cfg.latency, cfg.latency_max)
        return cfg.latency

    async def _work(self, request: Request, seconds: float, released: asyncio.Event) -> bool:
        """Sleep ``seconds`` or until released; False if the client went away first (``stop_on_disconnect``)."""
        if seconds <= 0:
            return True

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        waits = {asyncio.ensure_future(asyncio.sleep(seconds)), asyncio.ensure_future(released.wait())}
        watcher = asyncio.ensure_future(disconnected()) if self.config.stop_on_disconnect else None
        try:
            done, _ = await asyncio.wait(waits | ({watcher} if watcher else set()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*waits, watcher]:
                if task is not None:
                    task.cancel()
        return watcher is None or watcher not in done

    def stream_response(self, request: Request, prefix: Prefix, params: ImageParams, images: list[StreamedImage]) -> Response:
        """A streamed answer (local/sim_stream.py): the events spaced over this request's latency, faults applied."""
        settings = {
            "size": f"{params.width}x{params.height}" if params.size == "auto" else params.size,
            "quality": "medium" if params.quality == "auto" else params.quality,
            "background": params.background,
            "output_format": params.output_format,
        }
        stream = ImageStream(prefix, settings, images, self._delay(params.prompt), stream_fault(params.prompt), self.config.hang_seconds)

        def completed() -> None:
            self.stats.succeeded += 1
            self.stats.images += len(images)
            self._notify()

        async def body() -> AsyncIterator[bytes]:
            with self._at_work() as released:
                async for event in stream_events(stream, lambda seconds: self._work(request, seconds, released), self.clock.now, on_completed=completed):
                    yield event

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _generate(
        self,
        request: Request,
        raw: bytes,
        style: Literal["deployment", "v1", "openai"],
        path_deployment: str | None,
        entry: dict[str, Any],
        headers: dict[str, str],
    ) -> Response:
        cfg = self.config
        flavor: Flavor = "openai" if style == "openai" else "azure"
        api_version = self._check_api_version(request) if style == "deployment" else ("v1" if style == "v1" else "openai")
        self._check_auth(request, style)

        family: str | None = None
        if path_deployment is not None:
            family = cfg.family_of(path_deployment)
            if family is None:
                raise _azure_error(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _invalid(
                None,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library "
                "correctly. The API expects a JSON payload, but what was sent was not valid JSON.)",
                "invalid_json",
            )

        model = body.get("model")
        if path_deployment is not None:
            deployment = path_deployment
            if model is not None and (cfg.model_in_body == "reject" or (cfg.model_in_body == "match" and model != deployment)):
                raise _azure_error(404, "DeploymentNotFound", f"The model '{model}' does not exist")
        else:
            if flavor == "openai" and model is None:
                model = "dall-e-2"  # OpenAI's default
            if model is None:
                raise _invalid("model", "Missing required parameter: 'model'.", "missing_required_parameter")
            if not isinstance(model, str):
                raise _invalid("model", f"Invalid type for 'model': expected a string, but got {_json_type(model)} instead.", "invalid_type")
            deployment = model
            family = cfg.family_of(model)
            if family is None:
                if flavor == "openai":
                    raise _openai_error(
                        404, "model_not_found", f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error"
                    )
                raise _azure_error(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND)
        assert family is not None
        entry["deployment"], entry["family"] = deployment, family

        if style == "deployment" and cfg.enforce_api_version and family != DALL_E_3:
            # gpt-image: preview versions from 2025-04-01-preview; GA 2024-10-21 and older know only DALL-E
            date, preview = api_version[:10], api_version.endswith("-preview")
            if (preview and date < "2025-04-01") or (not preview and date <= "2024-10-21"):
                raise _azure_error(
                    400,
                    "OperationNotSupported",
                    f"The imagesGenerations operation does not work with the specified model, {family}, in api-version "
                    f"{api_version}. Please choose different model and try again. You can learn more about which models "
                    "can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.",
                )

        params = check_request(family, body)

        if cfg.policy_blocked:
            raise _azure_error(403, "Forbidden", POLICY_BLOCKED, outcome="blocked")
        headers.update(self._quota(deployment, api_version, flavor))
        self._fault(params.prompt, flavor)
        if (refused := faults.refusal(params.prompt, request)) is not None:
            return refused

        created = int(self.clock.now())
        revised = _revised_prompt(params)
        refuse_flagged(params.prompt, created, revised)

        # The work starts: billed from here (a client that goes away during the sleep still pays).
        self.stats.generations += 1
        self.stats.deployments[deployment] = self.stats.deployments.get(deployment, 0) + 1
        key = _image_key(params)
        if params.stream:
            variants = await self.images.variants(key, cfg.image_variants)
            first, usage = next(self._counter), _usage(replace(params, n=1))
            images = [
                streamed_image(variants[(first + i) % len(variants)], f"{headers['x-request-id']}/{i}", params.partial_images, usage, first_image=i == 0)
                for i in range(params.n)
            ]
            return self.stream_response(request, "image_generation", params, images)
        rendering = asyncio.ensure_future(self.images.variants(key, cfg.image_variants))
        with self._at_work() as released:
            finished = await self._work(request, self._delay(params.prompt), released)
            variants = await rendering
        if not finished:
            # Nobody is listening any more; the 499 is only for the record.
            raise SimError(
                499, {"error": {"code": "ClientClosedRequest", "message": "The client went away during the generation."}}, outcome="abandoned"
            )

        refuse_flagged(params.prompt, created, revised, "image")

        created = int(self.clock.now())
        first = next(self._counter)
        items: list[dict[str, Any]] = []
        splices: dict[str, bytes] = {}
        for index in range(params.n):
            image = variants[(first + index) % len(variants)].unique(f"{headers['x-request-id']}/{index} created={created}")
            item: dict[str, Any] = {}
            if params.response_format == "url":
                blob_id, expires = self.blobs.put(image, cfg.url_ttl_seconds)
                base = cfg.public_base_url or str(request.base_url).rstrip("/")
                item["url"] = (
                    f"{base}/_sim/blobs/{blob_id}.png?se={quote(_sas_time(expires), safe='')}&sig=sim&sp=r&sr=b&sv=2020-10-02"
                )
            else:
                placeholder = f"sim-b64-{uuid.uuid4().hex}"
                splices[placeholder] = image.b64()
                item["b64_json"] = placeholder
            if params.family == DALL_E_3:
                item["revised_prompt"] = revised
            if flavor == "azure":
                item["content_filter_results"] = _filter_results()
                item["prompt_filter_results"] = _filter_results(prompt=True)
            items.append(item)

        payload: dict[str, Any] = {"created": created, "data": items}
        if params.family != DALL_E_3:
            payload["usage"] = _usage(params)
        self.stats.succeeded += 1
        self.stats.images += params.n
        return faults.answer(params.prompt, payload, splices, request) or _spliced_json(payload, splices)


def streamed_image(rendered: _Rendered, tag: str, partials: int, usage: Mapping[str, Any], *, first_image: bool) -> StreamedImage:
    """One image of a streamed answer: ``partials`` partial images (each its own bytes), the final one, and its
    completed event's usage (the final image's, as unstreamed; input tokens on the first image only)."""
    if not first_image:
        usage = dict(usage, input_tokens=0, input_tokens_details={"text_tokens": 0, "image_tokens": 0}, total_tokens=usage["output_tokens"])
    return StreamedImage([rendered.unique(f"{tag} partial {p}").b64() for p in range(partials)], rendered.unique(tag).b64(), usage)


def _spliced_json(payload: dict[str, Any], splices: Mapping[str, bytes]) -> Response:
    """JSON with big base64 strings spliced in as bytes (no escaping scan, no extra copies)."""
    text = json.dumps(payload, separators=(",", ":")).encode("ascii")
    if splices:
        pattern = re.compile(b"|".join(re.escape(p.encode()) for p in splices))
        parts: list[bytes] = []
        last = 0
        for match in pattern.finditer(text):
            parts.append(text[last : match.start()])
            parts.append(splices[match[0].decode()])
            last = match.end()
        parts.append(text[last:])
        text = b"".join(parts)
    return Response(text, media_type="application/json")


# --------------------------------------------------------------------------- app and CLI


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Resource not found" if status == 404 else (exc.detail if isinstance(exc, HTTPException) else "error")
    return JSONResponse({"error": {"code": str(status), "message": message}}, status_code=status)


def create_simulator(config: SimulatorConfig | None = None, *, clock: SimClock | None = None) -> Starlette:
    """The simulator as an ASGI app; its state is ``app.state.sim`` (a :class:`Simulator`), its time ``clock``."""
    from local.sim_edits import edit_routes  # here: sim_edits builds on this module

    sim = Simulator(config, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        quiet_cuts()  # a [[stream-cut:K]] is asked for: no traceback in the server's log
        if sim.config.prewarm:
            IMAGE_CACHE.fill((1024, 1024, "png", 0, False), sim.config.image_variants)
        yield

    routes = [
        Route("/openai/deployments/{deployment}/images/generations", sim.deployment_route, methods=["POST"]),
        Route("/openai/v1/images/generations", sim.v1_route, methods=["POST"]),
        Route("/v1/images/generations", sim.openai_route, methods=["POST"]),
        Route("/_sim/blobs/{name}", sim.blob_route, methods=["GET"]),
        Route("/_sim/stats", sim.stats_route, methods=["GET"]),
        Route("/_sim/config", sim.config_route, methods=["GET", "POST"]),
        Route("/_sim/reset", sim.reset_route, methods=["POST"]),
        Route("/_sim/clock", sim.clock_route, methods=["GET", "POST"]),
        Route("/_sim/wait", sim.wait_route, methods=["POST"]),
        Route("/_sim/release", sim.release_route, methods=["POST"]),
        Route("/_sim/health", sim.health_route, methods=["GET"]),
        *edit_routes(sim),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    app.state.sim = sim
    app.router.routes.extend(faults.routes())
    return app


def _latency(value: str) -> tuple[float, float | None]:
    low, _, high = value.partition(",")
    return float(low), (float(high) if high else None)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, SimulatorConfig]:
    """The command line and the SimulatorConfig it describes."""
    parser = argparse.ArgumentParser(prog="python -m local.simulator", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency", type=_latency, default=(0.0, None), metavar="MIN[,MAX]", help="seconds per generation")
    parser.add_argument("--hang-seconds", type=float, default=600.0)
    parser.add_argument("--quota", type=int, default=0, help="requests per window per deployment (0: unlimited)")
    parser.add_argument("--quota-window", type=float, default=60.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-next", type=int, default=0)
    parser.add_argument("--fail-status", type=int, default=500, choices=sorted(FAULT_ANSWERS))
    parser.add_argument("--policy-blocked", action="store_true")
    parser.add_argument("--api-key", action="append", default=[], help="accepted key (repeat); none: no auth")
    parser.add_argument("--accept-any-bearer", action="store_true")
    parser.add_argument("--deployment", action="append", default=[], metavar="NAME=FAMILY")
    parser.add_argument("--model-in-body", choices=["match", "reject", "ignore"], default="match")
    parser.add_argument("--url-ttl", type=float, default=86400.0)
    parser.add_argument("--public-base-url", default="")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-prewarm", action="store_true")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    deployments: dict[str, str] = {}
    for item in args.deployment:
        name, sep, family = item.partition("=")
        if not sep:
            parser.error(f"--deployment needs NAME=FAMILY, got {item!r}")
        deployments[name.strip()] = family.strip()
    try:
        config = SimulatorConfig(
            deployments=deployments,
            api_keys=frozenset(args.api_key),
            accept_any_bearer=args.accept_any_bearer,
            model_in_body=args.model_in_body,
            latency=args.latency[0],
            latency_max=args.latency[1],
            hang_seconds=args.hang_seconds,
            quota_requests=args.quota,
            quota_window_seconds=args.quota_window,
            fail_rate=args.fail_rate,
            fail_next=args.fail_next,
            fail_status=args.fail_status,
            policy_blocked=args.policy_blocked,
            url_ttl_seconds=args.url_ttl,
            public_base_url=args.public_base_url,
            seed=args.seed,
            prewarm=not args.no_prewarm,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args, config


def main(argv: list[str] | None = None) -> None:
    """``python -m local.simulator --host 127.0.0.1 --port 8089 [--latency 0] ...``"""
    import uvicorn

    args, config = parse_args(argv)
    uvicorn.run(create_simulator(config), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
