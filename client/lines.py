"""The batch file: one JSON request per line, checked before anything is sent, each with a stable id.

A line is ``{"prompt": ..., "deployment"?: ..., "id"?: ..., "operation"?: "edit", other parameters}``.
Without an ``id``, the id is a hash of what the line asks (deployment, operation, parameters),
so running the same file again names the same jobs: the service answers an id it knows with
the job it already has, and nothing is generated (or paid for) twice.

A line is read as the service reads a body (:mod:`shared.strictjson`: no ``NaN`` or
``Infinity``, no key twice, no lone surrogate, bounded nesting and numbers) and its id,
deployment and operation are checked whole (``fullmatch``: an id ending in a newline is not an
id). Whatever a line holds, it becomes a :class:`BatchRequest` or an :class:`InvalidLine` with
its reason, never an exception; a line longer than :data:`MAX_LINE_BYTES` is not even read whole.
Each request carries the digest of what it asks, which results.jsonl keeps beside its id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared import strictjson

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # the service's Idempotency-Key; fullmatch
DEPLOYMENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # an Azure deployment name; fullmatch
OPERATIONS = ("generation", "edit")
MAX_LINE_BYTES = 1 << 20  # far more than the service takes in one body (256 KB by default)


@dataclass(frozen=True)
class BatchRequest:
    """A line that can be sent: its job id, deployment and body (without id, deployment and operation)."""

    line: int
    id: str
    deployment: str
    body: dict[str, Any] = field(hash=False)
    operation: str = "generation"

    @property
    def digest(self) -> str:
        """What the line asks, as a SHA-256 (hex) of its canonical JSON: the same request, the same digest."""
        return hashlib.sha256(_canonical(self.deployment, self.operation, self.body).encode()).hexdigest()

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


def _canonical(deployment: str, operation: str, body: dict[str, Any]) -> str:
    return json.dumps({"deployment": deployment, "operation": operation, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_id(deployment: str, operation: str, body: dict[str, Any]) -> str:
    """A stable job id from what a line asks: the same request always gets the same id."""
    return "b" + hashlib.sha256(_canonical(deployment, operation, body).encode()).hexdigest()[:31]


def parse_line(number: int, raw: bytes | str, default_deployment: str | None) -> BatchRequest | InvalidLine:
    """One line of the file as a request, or the reason it cannot be one."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        return InvalidLine(number, f"not UTF-8 (byte {exc.start})")
    try:
        value = strictjson.loads(text)
    except ValueError as exc:  # JSONRefused: not strict JSON, a lone surrogate, nested too deep
        return InvalidLine(number, f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return InvalidLine(number, f"a line must be a JSON object, got {type(value).__name__}")
    body = dict(value)
    given_id, deployment, operation = body.pop("id", None), body.pop("deployment", None), body.pop("operation", "generation")
    if given_id is not None and not (isinstance(given_id, str) and ID_PATTERN.fullmatch(given_id)):
        return InvalidLine(number, "'id' must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
    reason = _problem(body, deployment if deployment is not None else default_deployment, operation)
    if reason:
        return InvalidLine(number, reason, given_id)
    target = str(deployment if deployment is not None else default_deployment)
    return BatchRequest(number, given_id or derive_id(target, operation, body), target, body, operation)


def _problem(body: dict[str, Any], deployment: Any, operation: Any) -> str | None:
    if deployment is None:
        return "no deployment: give 'deployment' on the line or --deployment"
    if not (isinstance(deployment, str) and DEPLOYMENT_PATTERN.fullmatch(deployment)):
        return "'deployment' must be a deployment name: 1-64 letters, digits, '.', '-' or '_'"
    if operation not in OPERATIONS:
        return f"'operation' must be one of {', '.join(OPERATIONS)}"
    prompt = body.get("prompt")
    if prompt is None:
        return "'prompt' is missing"
    if not isinstance(prompt, str) or not prompt.strip():
        return "'prompt' must be a non-empty string"
    return None


def read_lines(path: Path, default_deployment: str | None) -> Iterator[BatchRequest | InvalidLine]:
    """Every non-blank line of ``path`` (numbered from 1), parsed."""
    with path.open("rb") as lines:  # bytes: one line that is not UTF-8 is one invalid line, not a failed run
        number = 0
        while True:
            raw = lines.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                _skip_rest(lines)
                yield InvalidLine(number, f"longer than {MAX_LINE_BYTES} bytes")
            elif raw.strip():
                yield parse_line(number, raw, default_deployment)


def _skip_rest(lines: IO[bytes]) -> None:
    """Read past the end of an overlong line, a bounded piece at a time."""
    while True:
        piece = lines.readline(MAX_LINE_BYTES)
        if not piece or piece.endswith(b"\n"):
            return
