"""What a tile shows, read from an archive record or a job record (plain JSON, read leniently).

Records are written by other versions of the service too, so every field is optional
here: a missing one shows as nothing, never as an error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUCCEEDED = "succeeded"
STATUSES = ("succeeded", "failed", "running", "notRunning")
KIND_LABELS = {"sync": "generation", "job": "background job", "edit": "edit", "edit job": "background edit"}
HEADINGS = {"sync": "Generation", "job": "Job", "edit": "Edit", "edit job": "Edit job"}
EDIT_OPERATION = "edit"  # what the service's records and job requests say of an edit (shared/models/edits.py)
STATUS_LABELS = {"succeeded": "succeeded", "failed": "failed", "running": "running", "notRunning": "queued"}
ALT_LIMIT = 250  # alt text: the prompt, cut where a screen reader user would want it cut


@dataclass
class Tile:
    """One generation, edit or job as the gallery shows it."""

    prefix: str  # the archive prefix: a day, or "jobs"
    id: str
    kind: str
    status: str
    prompt: str
    deployment: str
    model: str | None = None
    size: str | None = None
    time: dt.datetime | None = None  # when it last changed: a generation's record, a job's last update
    images: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    cost: Any = None
    error: dict[str, Any] | None = None
    inputs: list[str] = field(default_factory=list)  # an edit's input images, archived names in order
    mask: str | None = None  # an edit's mask, its archived name
    caller: str | None = None  # whose: the caller's name, else its id (shown to operators)

    @property
    def heading(self) -> str:
        """What the page of one is called: Generation, Edit, Job or Edit job."""
        return HEADINGS.get(self.kind, self.kind.capitalize())

    @property
    def alt(self) -> str:
        """Alt text for the tile's image: the prompt (shortened)."""
        text = " ".join(self.prompt.split()) or f"Image {self.id}"
        return text if len(text) <= ALT_LIMIT else text[: ALT_LIMIT - 1].rstrip() + "…"

    @property
    def kind_label(self) -> str:
        """What it was, in words."""
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def status_label(self) -> str:
        """The status in words (notRunning reads as queued)."""
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def tokens(self) -> int | None:
        """Total tokens of the usage, when upstream reported it."""
        total = (self.usage or {}).get("total_tokens")
        return total if isinstance(total, int) else None

    @property
    def cost_text(self) -> str | None:
        """The cost in words, whatever shape the record gives it (a number in USD, or {"usd": ...})."""
        return format_cost(self.cost)


def format_cost(cost: Any) -> str | None:
    """``0.042`` or ``{"usd": 0.042}`` or ``{"amount": 0.042, "currency": "EUR"}`` as text; None if absent."""
    if isinstance(cost, bool) or cost is None:
        return None
    if isinstance(cost, int | float):
        return f"${cost:,.4f}"
    if isinstance(cost, dict):
        for key in ("usd", "total_usd", "USD"):
            if isinstance(cost.get(key), int | float) and not isinstance(cost.get(key), bool):
                return f"${cost[key]:,.4f}"
        amount, currency = cost.get("amount"), cost.get("currency")
        if isinstance(amount, int | float) and isinstance(currency, str):
            return f"{amount:,.4f} {currency}"
    return None


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 string or Unix seconds as an aware datetime; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _size(*sources: Any) -> str | None:
    for source in sources:
        if isinstance(source, dict) and isinstance(source.get("size"), str):
            return str(source["size"])
    return None


def image_names(items: Any) -> list[str]:
    """Archived names from a list of names or of {"name": ...} objects."""
    names = []
    for item in items if isinstance(items, list) else []:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _kind(kind: str, operation: Any) -> str:
    """The tile's kind: ``sync`` or ``job`` as the record says, an ``edit`` (``edit job``) when its operation says so."""
    if operation != EDIT_OPERATION:
        return kind
    return "edit job" if kind == "job" else "edit"


def edit_inputs(inputs: Any) -> tuple[list[str], str | None]:
    """An edit's inputs as the service records them: ``{"image": [names] or name, "mask": name or null}``."""
    found = _object(inputs)
    images = found.get("image")
    mask = found.get("mask")
    return image_names(images if isinstance(images, list) else [images]), mask if isinstance(mask, str) and mask else None


def caller_label(record: dict[str, Any]) -> str | None:
    """Whose record it is, in words: the caller's name as the platform gave it, else its id."""
    caller = _object(record.get("caller"))
    return _text(caller.get("name")) or _text(caller.get("id")) or None


def tile_from_record(prefix: str, record: dict[str, Any]) -> Tile:
    """A tile for an archived generation or edit (``{prefix}/{id}/record.json``)."""
    parameters = _object(record.get("parameters"))
    inputs, mask = edit_inputs(record.get("inputs"))
    return Tile(
        prefix=prefix,
        id=_text(record.get("id")),
        kind=_kind(_text(record.get("kind")) or "sync", record.get("operation")),
        status=SUCCEEDED,  # a record is written only for a finished generation
        prompt=_text(record.get("prompt")),
        deployment=_text(record.get("deployment")),
        model=_text(record.get("model")) or None,
        size=_size(parameters.get("sent"), parameters.get("asked")),
        time=parse_time(record.get("created")),
        images=image_names(record.get("images")),
        usage=_object(record.get("usage")) or None,
        cost=record.get("cost"),
        inputs=inputs,
        mask=mask,
        caller=caller_label(record),
    )


def tile_from_job(job: dict[str, Any], family_of: Callable[[str], str | None]) -> Tile:
    """A tile for a background job, whatever its status (``{jobs container}/{id}.json``)."""
    request = _object(job.get("request"))
    result = _object(job.get("result"))
    deployment = _text(job.get("deployment"))
    inputs, mask = edit_inputs(request) if request.get("operation") == EDIT_OPERATION else ([], None)
    return Tile(
        prefix="jobs",
        id=_text(job.get("id")),
        kind=_kind("job", request.get("operation")),
        status=_text(job.get("status")) or "notRunning",
        prompt=_text(request.get("prompt")),
        deployment=deployment,
        model=family_of(deployment),
        size=_size(request),
        time=parse_time(job.get("updated")) or parse_time(job.get("created_at")) or parse_time(job.get("created")),
        images=image_names(result.get("images")),
        usage=_object(result.get("usage")) or None,
        cost=result.get("cost"),
        error=_object(job.get("error")) or None,
        inputs=inputs,
        mask=mask,
        caller=caller_label(job),
    )
