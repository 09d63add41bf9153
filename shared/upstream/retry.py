"""When a call to the images API is repeated, chosen so a user never pays twice.

One predicate, :func:`safe_to_repeat`, which reads the verdict of the one rule
(:mod:`shared.upstream.work`): upstream did no work and another attempt may succeed. That is a
429, a 503, or a request that never reached upstream whole (connect error, connect timeout, no
free connection in the pool, a connection that failed while the body was written). Never
repeated: a 408 or any other answer after which upstream may have worked, a timeout or a
connection that broke after the request was sent (upstream may already have made, and billed,
the image), and any 200 answer (the image exists).

The wait: what a 429 asks for (``retry-after-ms``, else ``Retry-After``), otherwise
full-jitter exponential backoff. Bounded by ``max_retries`` and by the caller's time
budget: a wait that does not fit ends the retrying, and the caller hears the last
answer (a 429 then carries its Retry-After to the client or the queue).

The 401 rule is apart (:class:`RefreshOnce`): the credential is refreshed once per
call and that request repeated once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.stop import stop_base

from shared.upstream.errors import UpstreamAnswer, throttle_seconds
from shared.upstream.work import AttemptFailed, failure_may_have_worked

log = logging.getLogger(__name__)

T = TypeVar("T")

# Full jitter (AWS architecture blog): the n-th wait is uniform in [0, min(2**n, 10)] seconds,
# which spreads the retries of many workers hitting the same failure.
BACKOFF_FIRST_CAP = 2.0
BACKOFF_CAP = 10.0

def safe_to_repeat(exc: BaseException) -> bool:
    """True when upstream did no work in the attempt that raised ``exc`` and the same request may go again."""
    if isinstance(exc, UpstreamAnswer | AttemptFailed):
        return exc.repeatable
    if isinstance(exc, httpx.TransportError):  # not known whether the body was sent: only what fails before sending
        return not failure_may_have_worked(exc, body_sent=None)
    return False


class _BudgetSpent(stop_base):
    """Stop when the next wait would end at or after the deadline: the caller is better served by the error."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, state: RetryCallState) -> bool:
        return self.clock() + state.upcoming_sleep >= self.deadline


class RetryPolicy:
    """:func:`safe_to_repeat` attempts repeated within ``max_retries`` and a time budget.

    ``sleep`` and ``clock`` (monotonic seconds) are injectable: tests record the waits
    instead of waiting them.
    """

    def __init__(
        self,
        max_retries: int,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_retries = max_retries
        self.sleep = sleep
        self.clock = clock
        self._backoff = wait_random_exponential(multiplier=BACKOFF_FIRST_CAP, max=BACKOFF_CAP)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: what a 429 asks for, else jittered backoff."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, UpstreamAnswer) and exc.status == 429:
            return throttle_seconds(exc.headers)
        return float(self._backoff(state))

    async def run(self, attempt: Callable[[], Awaitable[T]], *, budget: float) -> T:
        """``attempt()``'s result, repeating it as the module says; the last error if it never succeeds."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(safe_to_repeat),
            wait=self.wait,
            stop=stop_after_attempt(self.max_retries + 1) | _BudgetSpent(self.clock() + budget, self.clock),
            sleep=self.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

        async def once() -> T:  # tenacity awaits only what a coroutine function returns
            return await attempt()

        result: T = await retrying(once)
        return result


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait, attempt = state.upcoming_sleep, state.attempt_number
    if isinstance(exc, UpstreamAnswer) and exc.status == 429:
        log.info("upstream throttled (429); waiting %.2fs as asked", wait)
    elif isinstance(exc, UpstreamAnswer):
        log.warning("upstream answered %d; retry %d in %.1fs", exc.status, attempt, wait)
    else:
        log.warning("upstream connection failed (%s), retry %d in %.1fs", exc, attempt, wait)


class RefreshOnce:
    """The 401 rule for one generation: the first 401 refreshes the credential and repeats that request once.

    ``auth`` is an :class:`~shared.credentials.UpstreamAuth`; a second 401 is the caller's
    to map (the credential is refused even after a refresh).
    """

    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.used = False

    async def call(self, send: Callable[[dict[str, str]], Awaitable[T]]) -> T:
        """``send(headers)`` with the current credential, and again with a refreshed one after its first 401."""
        headers = await self.auth.headers()
        try:
            return await send(headers)
        except UpstreamAnswer as answer:
            if answer.status != 401 or self.used:
                raise
        self.used = True
        log.info("upstream answered 401; refreshing the credential once")
        await self.auth.refresh(headers)
        return await send(await self.auth.headers())
