"""What host.json says that the app must agree with: the queue trigger's settings and ``functionTimeout``.

The handler records a job as failed on the last delivery the host allows
(``maxDequeueCount``), and the local queue runner copies the host's dequeue,
visibility and encoding behaviour from the same object. host.json is part of the
deployed package, so reading it is pure.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


def host_queue_settings(path: Path = HOST_JSON) -> dict[str, Any]:
    """The ``extensions.queues`` object of host.json (maxDequeueCount, visibilityTimeout...), which the handler must agree with."""
    host = json.loads(path.read_text(encoding="utf-8"))
    queues: dict[str, Any] = host.get("extensions", {}).get("queues", {})
    return queues


@functools.cache
def host_max_dequeue_count(path: Path = HOST_JSON) -> int:
    """host.json's maxDequeueCount (the host's default, 5, when unset); read once per file."""
    return int(host_queue_settings(path).get("maxDequeueCount", 5))


# What a plan allows when host.json names no functionTimeout: the Consumption plan's default, the shortest.
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 300.0


@functools.cache
def host_function_timeout(path: Path = HOST_JSON) -> float | None:
    """host.json's ``functionTimeout`` in seconds (``[d.]hh:mm:ss``); None when it is unbounded (``-1``)."""
    host = json.loads(path.read_text(encoding="utf-8"))
    value = host.get("functionTimeout")
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT_SECONDS
    text = str(value).strip()
    if text == "-1":
        return None
    head, _, rest = text.partition(":")  # a .NET TimeSpan: "00:10:00", "1.02:00:00", "00:10:00.5"
    days, _, hours = head.rpartition(".")
    minutes, _, seconds = rest.partition(":")
    return float(days or 0) * 86400 + float(hours) * 3600 + float(minutes) * 60 + float(seconds)
