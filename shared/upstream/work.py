"""May upstream have done (and billed) the work of a failed attempt? The one rule every path asks.

Azure bills a request its service processed even when the answer is not a 200 (its examples: a 400
for content filtering, a 408 timeout) and not one it did not process (a 401, a 429): Microsoft
Learn, *Plan to manage costs for Azure OpenAI*, "HTTP error response code and billing status". So
an attempt is sent again, to the same backend after a wait or to another one, only when upstream
provably did no work:

- the request never reached upstream whole: no connection, no free connection, the connection
  failed while the body was written, or an answer came before the body was all sent; upstream
  cannot make an image of a request it does not have;
- upstream refused the request before working on it: 400, 401, 403, 404 (the request, the
  credential, the resource or the deployment), 429 (throttled) and 503 (unable to handle the
  request now, RFC 9110 15.6.4; "not enough capacity to process your request").

Everything else that happens once the body was sent may have been worked: a 408 and every other
4xx (409, 413, 422, 499...), every other 5xx (500 "error while processing your request", a
gateway's 502 or 504, which forwarded the request), any answer nobody expects (1xx, a 2xx other
than 200, 3xx), a connection cut while waiting for or reading the answer, a timeout after the
request left, and of course a 200. None of these is ever sent again, by any path: the retry
(:mod:`shared.upstream.retry`), the pool's failover (:mod:`shared.pool.router`) and the queue's
redelivery (:mod:`shared.jobs.handler`) all read the verdict this module gives, carried on
:class:`AttemptFailed` and on the service's error (``ServiceError.may_have_worked``).

Of what did no work, only some is worth sending again unchanged: a 429 or a 503 (after a wait),
and a request that never reached upstream. A 400 or a 404 would be refused again; a 401 is the
credential's business (refreshed once), a 401 or 403 of one backend another backend's.
"""

from __future__ import annotations

import httpx

# Answers that refuse the request before any work (see the module docstring).
NO_WORK_ANSWERS = frozenset({400, 401, 403, 404, 429, 503})
# Of those, the ones another attempt of the same request may get past (after Retry-After or backoff).
REPEATABLE_ANSWERS = frozenset({429, 503})
# Transport failures that happen before a request exists upstream, whatever the body.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def answer_may_have_worked(status: int, *, body_sent: bool = True) -> bool:
    """True when upstream may have worked on (and billed) a request it answered with ``status``.

    ``body_sent``: the request body had been written whole when the answer came (an answer before
    that, possible when upstream answers early and closes, came for a request it never had).
    """
    return body_sent and status not in NO_WORK_ANSWERS


def answer_repeatable(status: int, *, body_sent: bool = True) -> bool:
    """True when the same request may be sent again after this answer (upstream did no work, and may next time)."""
    if not body_sent:
        return status == 429 or status >= 500  # it never had the request: a refusal of load, not of the request
    return status in REPEATABLE_ANSWERS


def failure_may_have_worked(exc: BaseException, *, body_sent: bool | None) -> bool:
    """True when upstream may have worked on a request whose attempt failed with ``exc`` (a transport
    failure, or the call's deadline), given whether its body had been written whole (None: not known)."""
    if isinstance(exc, NOT_SENT):
        return False
    return body_sent is not False


class AttemptFailed(Exception):
    """One attempt's transport failure (``cause``: the httpx error) with the rule's verdict on it."""

    def __init__(self, cause: httpx.TransportError, *, body_sent: bool) -> None:
        super().__init__(f"{type(cause).__name__} ({'after' if body_sent else 'before'} the request body was sent)")
        self.cause = cause
        self.body_sent = body_sent
        self.may_have_worked = failure_may_have_worked(cause, body_sent=body_sent)

    @property
    def repeatable(self) -> bool:
        """Nothing reached upstream whole: the same request may go again."""
        return not self.may_have_worked
