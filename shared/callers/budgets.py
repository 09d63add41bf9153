"""Each caller's limits, enforced on every call that may reach the model, whichever way it came in.

:meth:`Budgets.reserve` runs before the upstream call of every generation and edit (synchronous
or queued: shared/service.py ``produce``), after the request was checked:

1. the deployment must be one the caller may use: else 403 ``DeploymentNotAllowed`` naming it;
2. the request's worst case (shared/pricing.py :func:`~shared.pricing.worst_case`: family, size,
   quality, ``n``, an edit's inputs) is held in the caller's ledger (shared/callers/ledger.py),
   shared by every instance: else 429 ``RateLimited`` (images per minute) or ``BudgetExceeded``
   (USD per day), with ``Retry-After`` and the ``x-ratelimit-*`` headers below.

The :class:`Hold` then ends with the call: settled at what upstream's usage says the images cost,
released when upstream provably did no work, charged at its worst case when it may have worked
and said nothing usable. A refusal that waiting cannot cure (more images than a minute allows, or
a day's budget spent) carries ``x-should-retry: false``, which the openai SDK obeys; the job
handler fails such a job with the reason and defers the others to their Retry-After
(shared/jobs/handler.py), as it does on upstream's own 429.

Headers (on refusals, and on every synchronous answer of a limited caller), seconds as numbers::

    x-ratelimit-limit-images  x-ratelimit-remaining-images  x-ratelimit-reset-images   (a sliding minute)
    x-ratelimit-limit-usd     x-ratelimit-remaining-usd     x-ratelimit-reset-usd      (the UTC day)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.callers.ledger import WINDOW, Decision, Ledger, Standing
from shared.callers.limits import CallerLimits, Limits
from shared.echo import shown
from shared.errors import SHOULD_RETRY, ServiceError
from shared.index import caller_key
from shared.models import ImageRequest
from shared.pricing import worst_case

log = logging.getLogger(__name__)


def ratelimit_headers(standing: Standing) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of where a caller stands (only for the limits it has)."""
    limits, headers = standing.limits, {}
    if limits.images_per_minute is not None:
        headers["x-ratelimit-limit-images"] = str(limits.images_per_minute)
        headers["x-ratelimit-remaining-images"] = str(max(0, limits.images_per_minute - standing.images_used))
        headers["x-ratelimit-reset-images"] = str(math.ceil(standing.images_reset))
    if limits.usd_per_day is not None:
        headers["x-ratelimit-limit-usd"] = f"{limits.usd_per_day:.6f}"
        headers["x-ratelimit-remaining-usd"] = f"{max(0.0, limits.usd_per_day - standing.usd_used):.6f}"
        headers["x-ratelimit-reset-usd"] = str(math.ceil(standing.usd_reset))
    return headers


def check_deployment(limits: CallerLimits, caller_id: str, deployment: str, param: str | None) -> Limits:
    """The caller's limits; 403 ``DeploymentNotAllowed`` naming the deployment when the caller may not use it."""
    found = limits.of(caller_id)
    if not found.allows(deployment):
        message = f"The caller {shown(caller_id)} may not use the deployment {shown(deployment)} (IMAGES_CALLER_LIMITS)."
        raise ServiceError(403, "DeploymentNotAllowed", message, param=param)
    return found


@dataclass
class Hold:
    """What one call holds of its caller's budget until it ends (nothing, for a caller without budget limits)."""

    ledger: Ledger | None = None
    key: str = ""
    day: str = ""
    rid: str | None = None
    standing: Standing | None = None
    ended: bool = field(default=False, init=False)

    @property
    def headers(self) -> dict[str, str]:
        """Where the caller stands once this call is counted."""
        return ratelimit_headers(self.standing) if self.standing else {}

    async def settle(self, usd: float | None, images: int) -> None:
        """Upstream answered with ``images``: charge what they cost (``usd`` None: not priced, the worst case held)."""
        await self._end("settle", usd, images)

    async def charge(self) -> None:
        """Upstream may have worked and said nothing usable: charge the worst case held."""
        await self._end("settle", None, None)

    async def release(self) -> None:
        """Upstream did no work: give the hold back."""
        await self._end("release", None, 0)

    async def _end(self, how: str, usd: float | None, images: int | None) -> None:
        if self.ledger is None or self.rid is None or self.ended:
            return
        self.ended = True
        try:
            if how == "release":
                await self.ledger.release(self.key, self.day, self.rid)
            else:
                await self.ledger.settle(self.key, self.day, self.rid, usd, images)
        except ServiceError as exc:  # the answer is not failed for it: the hold expires and is charged at its worst case
            log.warning("could not %s a budget hold of %s: %s", how, self.key, exc.message)


class Budgets:
    """The callers' limits (IMAGES_CALLER_LIMITS) and the ledger that enforces them across instances."""

    def __init__(self, limits: CallerLimits, ledger: Ledger | None) -> None:
        self.limits = limits
        self.ledger = ledger if limits.enabled else None

    async def reserve(self, caller_id: str, request: ImageRequest, *, input_pixels: Sequence[int] = (), ttl: float) -> Hold:
        """Hold the request's worst case for at most ``ttl`` seconds, or refuse it (403 or 429, nothing held)."""
        limits = check_deployment(self.limits, caller_id, request.deployment, "deployment")
        if self.ledger is None or (limits.images_per_minute is None and limits.usd_per_day is None):
            return Hold()
        usd = worst_case(request.family, request.upstream_body, input_pixels)
        if usd is None and limits.usd_per_day is not None:
            raise ServiceError(
                403, "DeploymentNotAllowed",
                f"The deployment {shown(request.deployment)} runs {request.family}, which this service cannot price, "
                f"so the caller's USD budget cannot cover it.", param="deployment",
            )  # fmt: skip
        key = caller_key(caller_id)
        decision = await self.ledger.reserve(key, limits, usd or 0.0, request.n, ttl)
        if decision.rid is None:
            raise refusal(caller_id, decision, request.n, usd or 0.0)
        return Hold(self.ledger, key, decision.day, decision.rid, decision.standing)


def refusal(caller_id: str, decision: Decision, images: int, usd: float) -> ServiceError:
    """429 for a reservation refused: which limit, what remains, when to come back."""
    standing, limits = decision.standing, decision.standing.limits
    headers = ratelimit_headers(standing) | ({SHOULD_RETRY: "false"} if decision.final else {})
    who = f"The caller {shown(caller_id)}"
    if decision.refused == "minute":
        limit = limits.images_per_minute
        if decision.final:  # a minute's wait (the Retry-After) would not help either: the answer says so (x-should-retry)
            message = f"{who} asked for {images} images at once; its limit is {limit} images a minute. Ask for fewer."
            return ServiceError(429, "RateLimited", message, param="n", retry_after=WINDOW, headers=headers)
        message = f"{who} has used {standing.images_used} of its {limit} images a minute; retry after {decision.wait:.0f} seconds."
        return ServiceError(429, "RateLimited", message, retry_after=decision.wait, transient=True, headers=headers)
    budget = limits.usd_per_day or 0.0
    left = max(0.0, budget - standing.usd_used)
    message = f"{who} has {left:.4f} of its {budget:.2f} USD a day left (spent and in flight), and this request may cost up to {usd:.4f} USD"
    if decision.final:
        return ServiceError(429, "BudgetExceeded", f"{message}; the budget renews at midnight UTC.", retry_after=decision.wait, headers=headers)
    message = f"{message}; calls in flight hold part of it: retry after {decision.wait:.0f} seconds."
    return ServiceError(429, "BudgetExceeded", message, retry_after=decision.wait, transient=True, headers=headers)
