"""Which backend serves a call, and when a failed call may go to another: never when upstream may have worked.

Choosing: among the backends of the best priority that have headroom (no live Retry-After,
quota left in the shared state), one at random in proportion to ``weight`` x headroom; the
call is reserved in the shared state before it is sent. A backend without headroom is
skipped, not called.

Failing over (:func:`did_no_work`): only when the one rule (:mod:`shared.upstream.work`) says
upstream did nothing — a 429 (the backend is then skipped for its Retry-After, by every
instance), a 503, a request that never reached upstream whole, a 401 or 403 of that backend.
Never after upstream may have worked: a 408 or another such 4xx, a 500, 502 or 504, a timeout,
a broken read, a 200 that cannot be used: the image may exist and be billed, so the caller
hears the error.

Every wait and every attempt fits in the caller's one :class:`~shared.deadline.Deadline`:
a moment is booked only if it comes before the deadline, and each attempt gets what is left
of it (no fresh timeout per backend).

When every backend is at its quota, the call *books* the earliest moment a backend has room
(shared/pool/throttle.py) if it may wait that long, and waits for it: waiters in the same
moment form a queue instead of a herd that wakes for the first free slot and goes back to
sleep. A synchronous call may wait its retry budget, else it answers 429 with the earliest
Retry-After; a job waits at most :data:`JOB_HOLD_SECONDS`, else it is deferred to exactly that
moment (:class:`PoolThrottled`) and chooses again when it is back.

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
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from shared import pricing
from shared.deadline import Deadline
from shared.errors import ServiceError
from shared.models import ImageRequest
from shared.pool.config import Backend
from shared.pool.throttle import ThrottleBoard
from shared.upstream import UpstreamClient, UpstreamResult
from shared.upstream.errors import DEFAULT_THROTTLE_SECONDS, deadline_error

log = logging.getLogger(__name__)


class Sent(Protocol):
    """What one upstream call gives back: its answer (images) or its open stream, with the requests it took."""

    attempts: int


S = TypeVar("S", bound=Sent)
# One upstream call of a request on a backend's client within the caller's deadline, repeating what is
# safe within the budget given (the third argument): a generation, an edit with its inputs
# (shared/edits.py), or a stream opened (shared/streaming.py).
Send = Callable[[UpstreamClient, ImageRequest, float], Awaitable[S]]


def did_no_work(error: ServiceError) -> bool:
    """True when the failed call cannot have made (or billed) an image and another backend may take it:
    the rule's verdict (``may_have_worked``), and a failure of this backend (transient, or its 403)."""
    if error.may_have_worked:
        return False
    # A 429, a 503, no connection, a refused or unavailable credential: transient. A 403 (not a content
    # filter): this backend's resource is blocked or refuses this identity.
    return error.transient or (error.status == 403 and error.code != "contentFilter")


@dataclass
class Routed(Generic[S]):
    """A call and how it was served: which backend, and how many requests each backend took."""

    result: S
    backend: str
    attempts: dict[str, int]

    def backend_fields(self) -> dict[str, Any]:
        """What the archive record says of the backend: ``backend`` and ``backend_attempts``."""
        return {"backend": self.backend, "backend_attempts": dict(self.attempts)}

    def record_fields(self: Routed[UpstreamResult], request: ImageRequest) -> dict[str, Any]:
        """What the archive record adds: ``backend``, ``backend_attempts`` and ``cost``."""
        cost = pricing.cost(request.family, self.result.usage, request.upstream_body, len(self.result.images))
        return {**self.backend_fields(), "cost": cost}


@dataclass
class Slot:
    """A backend with its open client."""

    backend: Backend
    client: UpstreamClient

    @property
    def key(self) -> str:
        return f"{self.backend.pool}/{self.backend.index}"


class PoolThrottled(ServiceError):
    """429: every backend of the pool is at its quota; Retry-After is the earliest moment one is free.

    That moment is exact, read from the shared state, not a guess: a job is deferred to it
    without jitter (shared/jobs/handler.py)."""

    def __init__(self, pool: str, wait: float) -> None:
        message = f"Every deployment of {pool!r} is at its quota; retry after {wait:.1f} seconds."
        super().__init__(429, "429", message, retry_after=max(0.0, wait), transient=True)


def all_throttled(pool: str, wait: float) -> PoolThrottled:
    """429 when every backend of the pool is at its quota: Retry-After is the earliest moment one is free."""
    return PoolThrottled(pool, wait)


# A job books a moment at most this far ahead and waits for it in process; beyond, it is deferred.
# The queue shows a continuation only after whole seconds, and the host polls an empty queue at
# most every second (host.json): a deferred job comes back up to 2 s early and waits out the rest.
JOB_HOLD_SECONDS = 2.5


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

    async def route(self, request: ImageRequest, send: Send[S], *, deadline: Deadline, budget: float, job: bool = False) -> Routed[S]:
        """``send`` the request (a generation, an edit or a stream) to the best backend with headroom; fail over
        only as :func:`did_no_work` allows, every wait and attempt within ``deadline``.

        ``budget``: how long a synchronous call may wait for a booked moment. ``job``: a queued
        job, which waits at most :data:`JOB_HOLD_SECONDS` and otherwise hears :class:`PoolThrottled`.
        """
        if len(self.slots) == 1:
            slot = self.slots[0]
            result = await send(slot.client, _for(request, slot), budget)
            return Routed(result, slot.backend.name, {slot.backend.name: result.attempts})
        horizon = self.board.clock() + min(JOB_HOLD_SECONDS if job else budget, deadline.remaining())
        excluded: set[str] = set()
        attempts: Counter[str] = Counter()
        last: ServiceError | None = None
        while sum(attempts.values()) < len(self.slots) * self.max_rounds:
            if deadline.passed:
                raise last or deadline_error(deadline.total, may_have_worked=False)
            chosen = await self._choose([s for s in self.slots if s.key not in excluded], horizon)
            if chosen is None:
                break
            if isinstance(chosen, float):
                raise all_throttled(self.name, chosen - self.board.clock())
            slot, at = chosen
            wait = at - self.board.clock()
            if wait > 0:
                await self.sleep(wait)
            try:
                result = await send(slot.client, _for(request, slot), 0)
            except ServiceError as error:
                attempts[slot.backend.name] += 2 if error.code == "UpstreamAuthenticationFailed" else 1  # a 401 is repeated once after a refresh
                if not did_no_work(error):
                    raise
                await self._failed(slot, error, excluded, at)
                last = error
                continue
            attempts[slot.backend.name] += result.attempts
            return Routed(result, slot.backend.name, dict(attempts))
        raise last or all_throttled(self.name, 0.0)

    async def _failed(self, slot: Slot, error: ServiceError, excluded: set[str], at: float) -> None:
        """A call that did no work: a 429 makes every instance skip the backend for its Retry-After (and hands back
        the call reserved at ``at``: upstream counts no throttled request, so neither may the board); anything
        else, this call."""
        if error.status == 429:
            seconds = error.retry_after if error.retry_after is not None else DEFAULT_THROTTLE_SECONDS
            log.info("pool %s: %s throttled for %.1fs; trying another backend", self.name, slot.backend.name, seconds)
            await self.board.throttled(slot.key, seconds, refused=at)
        else:
            log.warning("pool %s: %s failed before doing work (%s); trying another backend", self.name, slot.backend.name, error.code)
            excluded.add(slot.key)

    async def _choose(self, candidates: list[Slot], horizon: float) -> tuple[Slot, float] | float | None:
        """A backend and the moment reserved on it (now, or booked no later than ``horizon``); else
        the earliest moment one will have room; None when no backend is left to try."""
        while candidates:
            now = self.board.clock()
            states = {s.key: await self.board.state(s.key) for s in candidates}
            room = {s.key: states[s.key].headroom(s.backend.rpm, now) for s in candidates}
            ready = [s for s in candidates if room[s.key] > 0]
            if ready:
                best = min(s.backend.priority for s in ready)
                group = [s for s in ready if s.backend.priority == best]
                slot = self.rng.choices(group, weights=[s.backend.weight * room[s.key] for s in group])[0]
                at = await self.board.reserve(slot.key, slot.backend.rpm)
            else:
                # Nobody has room now: book the backend free first (the best priority among those free first).
                free = {s.key: states[s.key].available_at(s.backend.rpm, now) for s in candidates}
                first = min(free.values())
                if first > horizon:
                    return first
                soon = [s for s in candidates if free[s.key] <= first + _SAME_MOMENT]
                best = min(s.backend.priority for s in soon)
                group = [s for s in soon if s.backend.priority == best]
                slot = self.rng.choices(group, weights=[s.backend.weight for s in group])[0]
                # Only that moment: if it went meanwhile, another backend may be free first.
                at = await self.board.reserve(slot.key, slot.backend.rpm, not_after=min(horizon, first + _SAME_MOMENT))
            if at is not None:
                return slot, at
            # Another instance took that moment first: the fresh state decides again.
        return None


# Moments this close count as one when choosing whom to book (priority and weight decide among them).
_SAME_MOMENT = 0.05


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

    async def generate(self, request: ImageRequest, *, deadline: Deadline, budget: float, job: bool = False) -> Routed[UpstreamResult]:
        """Generate ``request`` on its deployment's pool (see :meth:`Pool.route`), or on the single endpoint."""

        async def send(client: UpstreamClient, request: ImageRequest, budget: float) -> UpstreamResult:
            return await client.generate(request, deadline=deadline, budget=budget)

        return await self.route(request, send, deadline=deadline, budget=budget, job=job)

    async def route(self, request: ImageRequest, send: Send[S], *, deadline: Deadline, budget: float, job: bool = False) -> Routed[S]:
        """``send`` ``request`` through its deployment's pool, or to the single endpoint (``send`` keeps to ``deadline`` itself)."""
        pool = self.pools.get(request.deployment)
        if pool is not None:
            return await pool.route(request, send, deadline=deadline, budget=budget, job=job)
        result = await send(self.default, request, budget)
        name = f"{urlsplit(self.default.settings.endpoint).netloc}/{request.deployment}"
        return Routed(result, name, {name: result.attempts})

