"""The app's traced steps: which span each call site gets, and the attributes and metrics it adds.

Each step is a decorator put on one function elsewhere (``@telemetry.generation`` on
``ImageService.generate``...). The hooks read the call's arguments by parameter name and its
result by attribute, so they import nothing from the modules they describe (those import this
package). What they put into telemetry passes :func:`~shared.telemetry.core.allowed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.telemetry.core import Steps, generation_scope, instruments, labels_of, traced

if TYPE_CHECKING:
    from shared.models import ImageRequest
    from shared.service import Generation


def cost_of(record: Mapping[str, Any]) -> tuple[float, str] | None:
    """The cost a generation's record carries, as (amount, currency), or None.

    The hook for pricing: once something writes ``record["cost"]`` (a number in USD, or
    ``{"amount" or "total": number, "currency": "USD"}``), spans and the cost metric carry it.
    """
    cost = record.get("cost")
    if isinstance(cost, Mapping):
        amount, currency = cost.get("amount", cost.get("total")), cost.get("currency") or "USD"
    else:
        amount, currency = cost, "USD"
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not isinstance(currency, str):
        return None
    return float(amount), currency


def _token_count(usage: Mapping[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- validation: parse_request(body, deployment, family, *, api_style_v1) -----------------------


def _validating(args: Mapping[str, Any]) -> Mapping[str, object]:
    return {"images.deployment": args["deployment"], "images.model_family": args["family"]}


def _validated(request: ImageRequest) -> Mapping[str, object]:
    body = request.upstream_body
    return {
        "images.n": request.n,
        "images.size": body.get("size"),
        "images.quality": body.get("quality"),
        "images.output_format": request.output_format,
        "images.prompt": request.asked.get("prompt"),  # kept only with IMAGES_TELEMETRY_PROMPTS=true
    }


# --- generation: ImageService.generate(self, request, *, generation_id, prefix, timeout, budget, kind) ---


def _generating(args: Mapping[str, Any]) -> Mapping[str, object]:
    request = args["request"]
    return {
        "images.deployment": request.deployment,
        "images.model_family": request.family,
        "images.kind": args["kind"],
        "images.generation_id": args["generation_id"],
        "images.n": request.n,
    }


def _generated(generation: Generation) -> Mapping[str, object]:
    """The generation's attributes, and its metrics: one generation, its images, tokens and cost."""
    images, result = generation.images, generation.result
    usage = result.usage or {}
    attributes: dict[str, object] = {
        "images.count": len(images),
        "images.bytes": sum(image.size for image in images),
        "images.upstream_attempts": result.attempts,
        "gen_ai.usage.input_tokens": _token_count(usage, "input_tokens"),
        "gen_ai.usage.output_tokens": _token_count(usage, "output_tokens"),
        "images.revised_prompt": next((i.revised_prompt for i in result.images if i.revised_prompt), None),
    }
    cost = cost_of(generation.record)
    if cost is not None:
        attributes["images.cost"], attributes["images.cost.currency"] = cost
    _count_generation(len(images), attributes, cost)
    return attributes


def _count_generation(images: int, attributes: Mapping[str, object], cost: tuple[float, str] | None) -> None:
    counters, labels = instruments(), labels_of({})
    counters.generations.add(1, labels)
    counters.images.add(images, labels)
    for kind in ("input", "output"):
        tokens = attributes[f"gen_ai.usage.{kind}_tokens"]
        if isinstance(tokens, int):
            counters.tokens.add(tokens, {**labels, "gen_ai.token.type": kind})
    if cost is not None:
        counters.cost.add(cost[0], {**labels, "images.cost.currency": cost[1]})


# --- upstream: UpstreamClient.generate(self, request, ...) and each request it sends -----------


def _calling_upstream(args: Mapping[str, Any]) -> Mapping[str, object]:
    settings = args["self"].settings
    return {"server.address": urlsplit(settings.endpoint).hostname, "images.api_style": settings.api_style}


def _attempting(args: Mapping[str, Any]) -> Mapping[str, object]:
    """UpstreamClient._post(self, url, payload, auth_headers, timeout): where it goes, and which attempt of the generation it is."""
    scope, attempt = generation_scope.get(), None
    if scope is not None:
        scope.attempts += 1
        attempt = scope.attempts
    return {"server.address": urlsplit(args["url"]).hostname, "images.upstream.attempt": attempt}


def _answered(_: object) -> Mapping[str, object]:
    return {"http.response.status_code": 200}  # any other answer is raised (UpstreamAnswer)


def _refused(exc: BaseException) -> Mapping[str, object]:
    """An answer other than 200 (UpstreamAnswer: status, headers): its status and Retry-After; a 429 is counted."""
    status, headers = getattr(exc, "status", None), getattr(exc, "headers", None)
    if not isinstance(status, int) or headers is None:
        return {}  # the connection failed: error.type says how
    from shared.upstream.errors import parse_retry_after  # here: shared.upstream imports this package

    if status == 429:
        instruments().throttles.add(1, labels_of({}))
    return {"http.response.status_code": status, "error.type": str(status), "images.upstream.retry_after_s": parse_retry_after(headers)}


# --- archive: Archive.store(self, prefix, generation_id, images, record, *, concurrent) ----------


def _archiving(args: Mapping[str, Any]) -> Mapping[str, object]:
    images = args["images"]
    return {
        "images.generation_id": args["generation_id"],
        "images.count": len(images),
        "images.bytes": sum(len(data) for data, _ in images),
        "archive.concurrent": args["concurrent"],
    }


# --- jobs: handle_queue_message(jobs, msg), JobStore.create(self, record) / replace(self, stored) ---


def _delivering(args: Mapping[str, Any]) -> Mapping[str, object]:
    message = args["msg"]
    return {"messaging.message.id": message.id, "images.dequeue_count": message.dequeue_count}


def _delivered(outcome: Any) -> Mapping[str, object]:
    return {"images.job_id": outcome.job_id, "images.job.outcome": outcome.action}


def _recording(args: Mapping[str, Any]) -> Mapping[str, object]:
    """A job record about to be written: its state and the event that changed it (the event's name, not its detail)."""
    record = args["record"] if "record" in args else args["stored"].record
    return {
        "images.job_id": record.id,
        "images.job.status": record.status.value,
        "images.job.event": record.events[-1].event if record.events else None,
        "images.job.attempts": record.attempts,
    }


def _recorded(written: object) -> Mapping[str, object]:
    return {"images.job.written": bool(written)}  # False or None: another delivery wrote first


validation = traced("images.validate", Steps(before=_validating, after=_validated, failures=True))
generation = traced("images.generate", Steps(before=_generating, after=_generated, failures=True, generation=True))
upstream_call = traced("upstream.call", Steps(before=_calling_upstream))
upstream_attempt = traced("upstream.attempt", Steps(before=_attempting, after=_answered, error=_refused))
archive_write = traced("archive.write", Steps(before=_archiving))
job_delivery = traced("images.job", Steps(before=_delivering, after=_delivered))
job_state = traced("job.state", Steps(before=_recording, after=_recorded))
