"""The one error type of the service and its Azure error shape.

Every refusal becomes ``{"error": {"code", "message", "param"?}}`` with the status
that fits. ``retry_after`` and ``transient`` tell the queue handler whether a
failure is worth another delivery; HTTP callers see Retry-After.

Storage calls say what they were doing with :func:`storage_call`; any
``AzureError`` inside becomes the one 503 ``StorageUnavailable`` answer.

``may_have_worked`` is the verdict of the one rule (:mod:`shared.upstream.work`): upstream may
have worked on (and billed) the request, so nothing sends it again: not the retry, not a pool's
failover, not the queue. ``transient`` says a later attempt may succeed, and is never true of an
error that may have been worked. :func:`not_repeated` turns any error that happened after
upstream may have done the work into a final one. An answer to a caller for such an error carries
``x-should-retry: false``, which the openai SDKs obey instead of retrying a 5xx or a 408 on their own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from azure.core.exceptions import AzureError

MAX_RETRY_AFTER_SECONDS = 3600.0  # longer asks are capped; non-finite or negative ones are not retry advice at all
SHOULD_RETRY = "x-should-retry"  # not a standard header; the openai SDKs obey it (openai-python _base_client._should_retry)


def sane_retry_after(seconds: float | None) -> float | None:
    """``seconds`` if it is usable retry advice (finite, >= 0), capped at :data:`MAX_RETRY_AFTER_SECONDS`; else None."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


class ServiceError(Exception):
    """A refusal or failure the caller is told about, in Azure's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        transient: bool = False,
        may_have_worked: bool = False,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.retry_after = sane_retry_after(retry_after)
        self.may_have_worked = may_have_worked
        self.transient = transient and not may_have_worked  # what may have been worked is never repeated
        self.extra = dict(extra or {})
        self.extra_headers = dict(headers or {})  # sent with the answer (a caller's x-ratelimit-*)
        self.upstream_request_id: str | None = None  # set when upstream answered: its id for the call, for the record

    def body(self) -> dict[str, Any]:
        """The JSON body: {"error": {...}}."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """The error's own headers (a caller's x-ratelimit-*), Retry-After (whole seconds, rounded up) and retry-after-ms
        when known; ``x-should-retry: false`` when upstream may have worked (the openai SDKs read it before their own
        retry of a 408 or 5xx)."""
        headers = dict(self.extra_headers) | ({SHOULD_RETRY: "false"} if self.may_have_worked else {})
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(0, int(self.retry_after * 1000)))
        return headers

    def __repr__(self) -> str:
        return f"ServiceError({self.status}, {self.code!r}, {self.message!r}, param={self.param!r})"


def not_repeated(error: ServiceError, why: str) -> ServiceError:
    """``error`` as a final failure: the same answer, not transient, its message saying why it is not repeated."""
    return ServiceError(
        error.status, error.code, f"{error.message} {why}", param=error.param, retry_after=error.retry_after, may_have_worked=True, extra=error.extra
    )


def invalid(param: str | None, message: str, code: str = "invalid_value") -> ServiceError:
    """400 for a request that breaks a rule; names the parameter."""
    return ServiceError(400, code, message, param=param, extra={"type": "invalid_request_error"})


def storage_error(exc: BaseException, action: str) -> ServiceError:
    """A storage failure as the service reports it: 503, transient, and only the exception's type
    (its text can carry URLs with signatures)."""
    return ServiceError(503, "StorageUnavailable", f"Azure Storage failed while {action}: {type(exc).__name__}", transient=True)


@asynccontextmanager
async def storage_call(action: str) -> AsyncIterator[None]:
    """One storage call, described as ``action`` ("reading a record"): an ``AzureError`` raised
    inside becomes :func:`storage_error`. Also a decorator (``@storage_call("...")``).

    Answers that are not failures (404 read as "absent", 409 as "exists") are caught
    inside the block, before they reach this mapping.
    """
    try:
        yield
    except AzureError as exc:
        raise storage_error(exc, action) from None
