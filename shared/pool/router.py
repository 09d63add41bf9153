"""Which backend serves a call, and when a failed call may go to another: never when upstream may have worked.

Choosing: among the backends of the best priority that have headroom (no live Retry-After,
quota left in the shared state), one at random in proportion to ``weight`` x headroom; the
call is reserved in the shared state before it is sent. A backend without headroom is
skipped, not called.

Failing over (:func:`did_no_work`): only after an answer that says upstream did nothing —
a 429 (the backend is then skipped for its Retry-After, by every instance), a 5xx answer,
a connection that failed before the request was sent, a 401 or 403 of that backend. Never
after the request was sent and the answer is missing or unusable (a timeout, a broken read,
a 200 that cannot be used): the image may exist and be billed, so the caller hears the error.

When every backend is at its quota: a synchronous call waits for the earliest one if that
fits in its retry budget, else answers 429 with that Retry-After; a job (budget 0) is
deferred to exactly then.

A pool of one backend is a plain call to its client (with the client's own retries); so is
a deployment that is not pooled (the single-endpoint settings).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared import pricing
from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.pool.config import Backend
from shared.pool.throttle import ThrottleBoard
from shared.upstream import UpstreamClient, UpstreamResult
from shared.upstream.errors import DEFAULT_THROTTLE_SECONDS

log = logging.getLogger(__name__)

# Codes of errors raised before upstream accepted any work (shared/upstream/errors.py, shared/credentials).
_NOT_SENT_CODES = frozenset({"UpstreamUnavailable", "UpstreamAuthenticationFailed", "CredentialUnavailable"})


def did_no_work(error: ServiceError) -> bool:
    """True when the failed call cannot have made (or billed) an image, so another backend may take it."""
    if error.status == 429 or error.code in _NOT_SENT_CODES:
        return True
    if error.status == 403 and error.code != "contentFilter":
        return True  # this backend's resource is blocked or refuses this identity
    # A 5xx answer is a transient UpstreamError; what follows a 200 (unusable answer) and
    # a broken read are UpstreamError too, but never transient: the image may exist.
    return error.code == "UpstreamError" and error.transient


@dataclass
class Routed:
    """A generation and how it was served: which backend, and how many requests each backend took."""

    result: UpstreamResult
    backend: str
    attempts: dict[str, int]

    def record_fields(self, request: ImageRequest) -> dict[str, Any]:
        """What the archive record adds: ``backend``, ``backend_attempts`` and ``cost``."""
        return {
            "backend": self.backend,
            "backend_attempts": dict(self.attempts),
            "cost": pricing.cost(request.family, self.result.usage, request.upstream_body, len(self.result.images)),
        }


@dataclass
class Slot:
    """A backend with its open client."""

    backend: Backend
    client: UpstreamClient

    @property
    def key(self) -> str:
        return f"{self.backend.pool}/{self.backend.index}"


def all_throttled(pool: str, wait: float) -> ServiceError:
    """429 when every backend of the pool is at its quota: Retry-After is the earliest moment one is free."""
    return ServiceError(
        429, "429", f"Every deployment of {pool!r} is at its quota; retry after {wait:.1f} seconds.", retry_after=max(0.0, wait), transient=True
    )


class Pool:
    """The backends of one logical deployment, sharing what they learn through ``board``."""

    def __init__(
        self,
        name: str,
        slots: list[Slot],
        board: ThrottleBoard,
        *,
        max_rounds: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.slots = slots
        self.board = board
        self.max_rounds = max_rounds  # how often one call may come back to a backend after a 429
        self.sleep = sleep
        self.rng = rng or random.Random()

    async def generate(self, request: ImageRequest, *, timeout: float, budget: float) -> Routed:
        """Generate on the best backend with headroom; fail over only as :func:`did_no_work` allows."""
        if len(self.slots) == 1:
            slot = self.slots[0]
            result = await slot.client.generate(_for(request, slot), timeout=timeout, budget=budget)
            return Routed(result, slot.backend.name, {slot.backend.name: result.attempts})
        deadline = self.board.clock() + budget
        excluded: set[str] = set()
        attempts: Counter[str] = Counter()
        last: ServiceError | None = None
        while sum(attempts.values()) < len(self.slots) * self.max_rounds:
            candidates = [s for s in self.slots if s.key not in excluded]
            if not candidates:
                break
            chosen = await self._choose(candidates)
            if isinstance(chosen, float):
                wait = chosen - self.board.clock()
                if self.board.clock() + wait >= deadline:
                    raise all_throttled(self.name, wait)
                await self.sleep(wait)
                self.board.forget()
                continue
            name = chosen.backend.name
            try:
                result = await chosen.client.generate(_for(request, chosen), timeout=timeout, budget=0)
            except ServiceError as error:
                attempts[name] += 2 if error.code == "UpstreamAuthenticationFailed" else 1  # a 401 is repeated once after a refresh
                if not did_no_work(error):
                    raise
                await self._failed(chosen, error, excluded)
                last = error
                continue
            attempts[name] += result.attempts
            return Routed(result, name, dict(attempts))
        raise last or all_throttled(self.name, 0.0)

    async def _failed(self, slot: Slot, error: ServiceError, excluded: set[str]) -> None:
        """A call that did no work: a 429 makes every instance skip the backend; anything else, this call."""
        if error.status == 429:
            seconds = error.retry_after if error.retry_after is not None else DEFAULT_THROTTLE_SECONDS
            log.info("pool %s: %s throttled for %.1fs; trying another backend", self.name, slot.backend.name, seconds)
            await self.board.throttled(slot.key, seconds)
        else:
            log.warning("pool %s: %s failed before doing work (%s); trying another backend", self.name, slot.backend.name, error.code)
            excluded.add(slot.key)

    async def _choose(self, candidates: list[Slot]) -> Slot | float:
        """A reserved backend, or the moment the earliest one will have headroom."""
        while True:
            now = self.board.clock()
            states = {s.key: await self.board.state(s.key) for s in candidates}
            room = {s.key: states[s.key].headroom(s.backend.rpm, now) for s in candidates}
            ready = [s for s in candidates if room[s.key] > 0]
            if not ready:
                return min(states[s.key].available_at(s.backend.rpm, now) for s in candidates)
            best = min(s.backend.priority for s in ready)
            group = [s for s in ready if s.backend.priority == best]
            slot = self.rng.choices(group, weights=[s.backend.weight * room[s.key] for s in group])[0]
            if await self.board.reserve(slot.key, slot.backend.rpm):
                return slot
            # Another instance took the last slot first: the fresh state decides again.


def _for(request: ImageRequest, slot: Slot) -> ImageRequest:
    """The request as this backend's upstream names its deployment."""
    if request.deployment == slot.backend.deployment:
        return request
    return dataclasses.replace(request, deployment=slot.backend.deployment)


class Pools:
    """Every pool of the app, and the single-endpoint client for deployments that are not pooled."""

    def __init__(self, default: UpstreamClient, pools: Mapping[str, Pool] | None = None) -> None:
        self.default = default
        self.pools = dict(pools or {})

    async def generate(self, request: ImageRequest, *, timeout: float, budget: float) -> Routed:
        """Generate ``request`` on its deployment's pool, or on the single endpoint."""
        pool = self.pools.get(request.deployment)
        if pool is not None:
            return await pool.generate(request, timeout=timeout, budget=budget)
        result = await self.default.generate(request, timeout=timeout, budget=budget)
        name = f"{urlsplit(self.default.settings.endpoint).netloc}/{request.deployment}"
        return Routed(result, name, {name: result.attempts})

