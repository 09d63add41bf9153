"""``IMAGES_CALLER_LIMITS``: what each caller may spend, parsed and checked once at start.

The setting is a JSON object: limits for every caller (``default``) and per principal
(``callers``), each field optional::

    {"default": {"images_per_minute": 20, "usd_per_day": 10, "deployments": ["gpt-image-2"]},
     "callers": {"entra:00000000-0000-0000-0000-000000000001": {"usd_per_day": 50},
                 "queue:image-jobs": {"images_per_minute": 6, "deployments": "*"}}}

- ``images_per_minute``: images asked for (``n``) in any 60 seconds, a whole number >= 1;
- ``usd_per_day``: what the caller's images may cost in a UTC day (prices: shared/pricing.py), >= 0;
- ``deployments``: the deployment names the caller may use (``"*"``: every one), each one the app serves.

A ``callers`` key is a caller's id as records and ``/usage`` spell it (``mode:principal``: the
Entra object id in entra mode, the key's name in key mode, the queue's name for the queue), or a
bare principal, which matches it in any mode; the id wins over the bare principal. A caller's
entry inherits every field it leaves out from ``default``; ``null`` lifts that limit. Blank (the
default): no limits, and nothing is reserved or recorded for them. A mistake refuses the start
with a sentence naming the entry: ``IMAGES_CALLER_LIMITS.callers["x"].usd_per_day must be ...``.
Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

SETTING = "IMAGES_CALLER_LIMITS"
# A caller's id as records, /usage and the gallery's filter spell it: mode:principal (fullmatch).
CALLER_ID = re.compile(r"(?:key|entra|queue):[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
ALL = "*"
MAX_IMAGES_PER_MINUTE = 1_000_000
MAX_USD_PER_DAY = 1_000_000_000.0


class LimitsConfigError(ValueError):
    """IMAGES_CALLER_LIMITS is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Limits:
    """One caller's limits; None: no limit of that kind."""

    images_per_minute: int | None = None
    usd_per_day: float | None = None
    deployments: frozenset[str] | None = None  # None: every deployment the app serves

    @property
    def any(self) -> bool:
        """True when something is limited."""
        return self.images_per_minute is not None or self.usd_per_day is not None or self.deployments is not None

    def allows(self, deployment: str) -> bool:
        """True when the caller may use ``deployment``."""
        return self.deployments is None or deployment in self.deployments


@dataclass(frozen=True)
class CallerLimits:
    """Every caller's limits: ``default`` for callers without an entry of their own."""

    default: Limits = Limits()
    callers: Mapping[str, Limits] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def enabled(self) -> bool:
        """True when some caller has a limit (otherwise nothing is reserved or recorded)."""
        return self.default.any or any(limits.any for limits in self.callers.values())

    def of(self, caller_id: str) -> Limits:
        """The limits of the caller ``mode:principal``: its own entry, its principal's, or the default."""
        found = self.callers.get(caller_id)
        if found is None:
            found = self.callers.get(caller_id.partition(":")[2])
        return found if found is not None else self.default


_FIELDS = tuple(f.name for f in fields(Limits))


def parse_limits(text: str, *, deployments: Collection[str]) -> CallerLimits:
    """The limits of ``text`` (none when blank); ``deployments``: the names the app serves."""
    if not text.strip():
        return CallerLimits()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LimitsConfigError(f"{SETTING} must be JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise LimitsConfigError(f'{SETTING} must be a JSON object: {{"default": {{...}}, "callers": {{"principal": {{...}}}}}}')
    unknown = sorted(set(data) - {"default", "callers"})
    if unknown:
        raise LimitsConfigError(f"{SETTING} has {unknown[0]!r}, which is not 'default' or 'callers'")
    default = _limits(data.get("default", {}), Limits(), f"{SETTING}.default", deployments)
    callers = data.get("callers", {})
    if not isinstance(callers, dict):
        raise LimitsConfigError(f'{SETTING}.callers must be a JSON object of principals: {{"principal": {{...}}}}')
    entries = {}
    for principal, entry in callers.items():
        where = f"{SETTING}.callers[{json.dumps(principal)}]"
        if not principal.strip() or principal != principal.strip():
            raise LimitsConfigError(f"{where}: a caller entry needs a principal (a caller id or a bare principal), without spaces around it")
        entries[principal] = _limits(entry, default, where, deployments)
    return CallerLimits(default, MappingProxyType(entries))


def _limits(entry: Any, base: Limits, where: str, deployments: Collection[str]) -> Limits:
    if not isinstance(entry, dict):
        raise LimitsConfigError(f"{where} must be a JSON object with any of {', '.join(_FIELDS)}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise LimitsConfigError(f"{where}.{unknown[0]} is not a limit; the limits are {', '.join(_FIELDS)}")
    changes: dict[str, Any] = {}
    if "images_per_minute" in entry:
        changes["images_per_minute"] = _per_minute(entry["images_per_minute"], f"{where}.images_per_minute")
    if "usd_per_day" in entry:
        changes["usd_per_day"] = _usd(entry["usd_per_day"], f"{where}.usd_per_day")
    if "deployments" in entry:
        changes["deployments"] = _deployments(entry["deployments"], f"{where}.deployments", deployments)
    return replace(base, **changes)


def _per_minute(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGES_PER_MINUTE:
        raise LimitsConfigError(f"{where} must be a whole number from 1 to {MAX_IMAGES_PER_MINUTE} (or null: no limit), got {json.dumps(value)}")
    return value


def _usd(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= MAX_USD_PER_DAY:
        raise LimitsConfigError(f"{where} must be a number of US dollars from 0 to {MAX_USD_PER_DAY:g} (or null: no limit), got {json.dumps(value)}")
    return float(value)


def _deployments(value: Any, where: str, known: Collection[str]) -> frozenset[str] | None:
    if value is None or value == ALL:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise LimitsConfigError(f'{where} must be a list of deployment names, or "*" for every one')
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise LimitsConfigError(f"{where} names {unknown[0]!r}, which this app does not serve (it serves {', '.join(sorted(known))})")
    return frozenset(value)
