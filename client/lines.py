"""The batch file: one JSON request per line, checked before anything is sent, each with a stable id.

A line is ``{"prompt": ..., "deployment"?: ..., "id"?: ..., "operation"?: "edit", other parameters}``.
Without an ``id``, the id is a hash of what the line asks (deployment, operation, parameters),
so running the same file again names the same jobs: the service answers an id it knows with
the job it already has, and nothing is generated (or paid for) twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # fullmatch: $ would let a trailing newline through
OPERATIONS = ("generation", "edit")


@dataclass(frozen=True)
class BatchRequest:
    """A line that can be sent: its job id, deployment and body (without id, deployment and operation)."""

    line: int
    id: str
    deployment: str
    body: dict[str, Any] = field(hash=False)
    operation: str = "generation"

    def message(self) -> dict[str, Any]:
        """The queue message: the body plus ``id`` and ``deployment`` (and ``operation`` for an edit)."""
        extra = {"operation": self.operation} if self.operation != "generation" else {}
        return {**self.body, **extra, "id": self.id, "deployment": self.deployment}


@dataclass(frozen=True)
class InvalidLine:
    """A line that is not sent, and why."""

    line: int
    reason: str
    id: str | None = None


def derive_id(deployment: str, operation: str, body: dict[str, Any]) -> str:
    """A stable job id from what a line asks: the same request always gets the same id."""
    canonical = json.dumps({"deployment": deployment, "operation": operation, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "b" + hashlib.sha256(canonical.encode()).hexdigest()[:31]


def parse_line(number: int, raw: bytes | str, default_deployment: str | None) -> BatchRequest | InvalidLine:
    """One line of the file as a request, or the reason it cannot be one."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        return InvalidLine(number, f"not UTF-8 (byte {exc.start})")
    except ValueError as exc:
        return InvalidLine(number, f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return InvalidLine(number, f"a line must be a JSON object, got {type(value).__name__}")
    body = dict(value)
    given_id, deployment, operation = body.pop("id", None), body.pop("deployment", None) or default_deployment, body.pop("operation", "generation")
    if given_id is not None and not (isinstance(given_id, str) and ID_PATTERN.fullmatch(given_id)):
        return InvalidLine(number, "'id' must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
    if not isinstance(deployment, str) or not deployment:
        return InvalidLine(number, "no deployment: give 'deployment' on the line or --deployment", given_id)
    reason = _problem(body, operation)
    if reason:
        return InvalidLine(number, reason, given_id)
    return BatchRequest(number, given_id or derive_id(deployment, operation, body), deployment, body, operation)


def _problem(body: dict[str, Any], operation: Any) -> str | None:
    prompt = body.get("prompt")
    if prompt is None:
        return "'prompt' is missing"
    if not isinstance(prompt, str) or not prompt.strip():
        return "'prompt' must be a non-empty string"
    if operation not in OPERATIONS:
        return f"'operation' must be one of {', '.join(OPERATIONS)}"
    return None


def read_lines(path: Path, default_deployment: str | None) -> Iterator[BatchRequest | InvalidLine]:
    """Every non-blank line of ``path`` (numbered from 1), parsed."""
    with path.open("rb") as lines:  # bytes: one line that is not UTF-8 is one invalid line, not a failed run
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                yield parse_line(number, raw, default_deployment)
