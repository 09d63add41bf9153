"""What the service says when upstream fails: the mapping of upstream answers and transport errors.

Every error is a :class:`~shared.errors.ServiceError` in the Azure shape. Upstream's
content-filter answers keep the seed's shapes (``contentFilter``, the two safety messages).
Upstream's own words (message, code, param, a revised prompt) pass through
:func:`~shared.redaction.scrub` first: an upstream that echoes the key it was sent never
hands it to a caller or a job record. Retry advice that is not a finite number of seconds
(``1e400``, ``NaN``, negative) is ignored; longer asks are capped.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import ServiceError, sane_retry_after
from shared.redaction import scrub
from shared.upstream.work import AttemptFailed, answer_may_have_worked, answer_repeatable

PROMPT_FILTERED = "Your task failed as a result of our safety system."
IMAGE_FILTERED = "Generated image was filtered as a result of our safety system."
# What a 429 without (usable) Retry-After is taken to ask for.
DEFAULT_THROTTLE_SECONDS = 10.0
NAME_LIMIT = 64  # upstream's error code and param, as passed on
NOT_REPEATED = "Not repeated: the model service may already have made (and billed) the image."


class UpstreamAnswer(Exception):
    """A non-200 answer from the images API, read but not yet mapped (see :func:`map_error`), with the
    one rule's verdict on it (:mod:`shared.upstream.work`)."""

    def __init__(self, status: int, body: Any, headers: httpx.Headers, *, body_sent: bool = True) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body
        self.headers = headers
        self.body_sent = body_sent  # the request body was written whole before the answer came
        self.may_have_worked = answer_may_have_worked(status, body_sent=body_sent)
        # A content filter's verdict is final whatever status it came with: the same request is refused again.
        self.repeatable = answer_repeatable(status, body_sent=body_sent) and not content_filtered(body)


def content_filtered(body: Any) -> bool:
    """True when an answer's body is a content filter's verdict (either shape)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return False
    inner = error.get("inner_error") or error.get("innererror")
    return _name(error.get("code")) in _FILTER_CODES or (isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation")


_FILTER_CODES = ("contentFilter", "content_filter", "content_policy_violation")


def upstream_error(message: str, *, transient: bool = False, may_have_worked: bool = True) -> ServiceError:
    """502 ``UpstreamError``: the model service failed or answered something unusable.

    Upstream may have worked unless said: most of these follow a 200, so upstream has already made
    (and billed) the image and a queue redelivery would pay for it a second time.
    """
    return ServiceError(502, "UpstreamError", message, transient=transient, may_have_worked=may_have_worked)


def image_too_large(limit: int) -> ServiceError:
    """The image (decoded or downloaded) is over ``IMAGES_MAX_IMAGE_BYTES``."""
    return upstream_error(f"The image from the model service is larger than {limit} bytes.")


def invalid_base64() -> ServiceError:
    """A ``b64_json`` value that is not strict base64."""
    return upstream_error("The model service returned invalid base64.")


def sniff_content_type(data: bytes) -> str | None:
    """The image type from its magic bytes (upstream's word is not trusted for this)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (preferred, finer) or ``Retry-After``; a value that is not
    a finite number of seconds >= 0 is skipped, a longer one capped (:func:`~shared.errors.sane_retry_after`)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        try:
            seconds = sane_retry_after(float(raw) * scale) if raw is not None else None
        except ValueError:
            seconds = None  # an HTTP date: rare for this API; fall through to the other header
        if seconds is not None:
            return seconds
    return None


def throttle_seconds(headers: httpx.Headers) -> float:
    """How long a 429 asks to wait (:data:`DEFAULT_THROTTLE_SECONDS` when it does not say)."""
    retry_after = parse_retry_after(headers)
    return DEFAULT_THROTTLE_SECONDS if retry_after is None else retry_after


def _content_filter_error(error: dict[str, Any], inner: dict[str, Any], message: str) -> ServiceError:
    image_side = "generated image" in message.lower() or "image was filtered" in message.lower()
    extra: dict[str, Any] = {"filtered": "image" if image_side else "prompt"}
    results = inner.get("content_filter_results") or error.get("content_filter_results")
    if isinstance(results, dict):
        categories = sorted(k for k, v in results.items() if isinstance(v, dict) and v.get("filtered"))
        if categories:
            extra["categories"] = categories
        extra["content_filter_results"] = results
    if isinstance(inner.get("revised_prompt"), str):
        extra["revised_prompt"] = scrub(inner["revised_prompt"], 4000)
    return ServiceError(400, "contentFilter", IMAGE_FILTERED if image_side else PROMPT_FILTERED, extra=extra)


def map_answer(answer: UpstreamAnswer) -> ServiceError:
    """An upstream answer as the service's error, carrying the rule's verdict (may it have been worked, is it worth repeating)."""
    error = map_error(answer.status, answer.body, answer.headers, body_sent=answer.body_sent)
    error.upstream_request_id = answer.headers.get("apim-request-id") or answer.headers.get("x-request-id")
    return error


def map_error(status: int, body: Any, headers: httpx.Headers, *, body_sent: bool = True) -> ServiceError:
    """Turn an upstream error response into the service's error (seed shapes for content filtering).

    Whether it may be repeated is :mod:`shared.upstream.work`'s verdict, never this mapping's: an answer
    that may have been worked (a 408, a 500 once the body was sent) is final, and says why."""
    worked = answer_may_have_worked(status, body_sent=body_sent)
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = _name(error.get("code"))
    message = scrub(str(error.get("message") or ""))
    inner = error.get("inner_error") or error.get("innererror") or {}
    inner = inner if isinstance(inner, dict) else {}

    if content_filtered(body):
        filtered = _content_filter_error(error, inner, message)
        filtered.may_have_worked = worked  # never repeated either way; a filtered image was made and billed
        return filtered
    if worked:
        return upstream_error(f"The model service answered {status}: {message.rstrip('.') or 'no details'}. {NOT_REPEATED}")
    if status == 429:
        message = message or "The model deployment is throttling requests; retry later."
        return ServiceError(429, "429", message, retry_after=throttle_seconds(headers), transient=True)
    if status == 400:
        # It passed this service's checks, so upstream's own words are the best explanation.
        param = _name(error.get("param")) or None
        return ServiceError(400, code or "invalid_request", message or "The model service rejected the request.", param=param)
    if status == 401:
        return ServiceError(
            502,
            "UpstreamAuthenticationFailed",
            "The model service refused this app's credentials (401) even after refreshing them; "
            "check the key or the identity's role 'Cognitive Services OpenAI User'.",
            transient=True,
        )
    if status == 403:
        return ServiceError(403, code or "Forbidden", message or "The model service refused the request (403).")
    if status == 404:
        return ServiceError(404, "DeploymentNotFound", "The model service does not have this deployment: " + (message or "404 from upstream"))
    # A 503, or an answer that came before the request body was all sent: upstream did no work.
    what = "failed" if status >= 500 else "refused the request"
    return upstream_error(f"The model service {what} ({status}): {message or 'no details'}", transient=answer_repeatable(status, body_sent=body_sent), may_have_worked=False)


def stream_error(body: Any) -> ServiceError:
    """Upstream's ``error`` event in a stream it had started: final whatever it says, since the request was
    accepted (and may be billed). A content filter's verdict keeps the seed's shape; anything else is a 502
    quoting upstream's message (redacted)."""
    if content_filtered(body):
        return map_error(502, body, httpx.Headers())  # an answer after which upstream may have worked: never repeated
    error = body.get("error") if isinstance(body, dict) else None
    message = scrub(str(error.get("message") or "")) if isinstance(error, dict) else ""
    return upstream_error(f"The model service's stream ended with an error: {message.rstrip('.') or 'no details'}. {NOT_REPEATED}")


def _name(value: Any) -> str:
    """Upstream's error code or param as passed on: a short string, redacted."""
    return scrub(str(value), NAME_LIMIT) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def deadline_error(total: float, *, may_have_worked: bool) -> ServiceError:
    """The call's one deadline passed: a final 504 if a request may have been worked (it may be billed),
    else a transient 503 (nothing reached upstream whole)."""
    if not may_have_worked:
        return ServiceError(
            503, "UpstreamBusy", f"The call's deadline ({total:g} s) passed before a request reached the model service; nothing was sent.", transient=True
        )
    return ServiceError(504, "UpstreamTimeout", f"The model service did not answer within the call's deadline ({total:g} s). {NOT_REPEATED}", may_have_worked=True)


def unexpected_error(exc: BaseException, *, may_have_worked: bool) -> ServiceError:
    """An exception nobody expected, as the service reports it: final once a request may have been worked, else retryable."""
    what = type(exc).__name__
    if may_have_worked:
        return upstream_error(f"The answer of the model service could not be processed ({what}). {NOT_REPEATED}")
    return ServiceError(503, "InternalError", f"The service failed before calling the model service ({what}); nothing was sent.", transient=True)


def transport_error(failure: AttemptFailed) -> ServiceError:
    """What a failed connection means for the caller: whether upstream may already have done the work."""
    exc, what = failure.cause, type(failure.cause).__name__
    if not failure.may_have_worked:
        return ServiceError(502, "UpstreamUnavailable", f"Could not reach the model service ({what}); nothing was sent whole.", transient=True)
    if isinstance(exc, httpx.TimeoutException):
        return ServiceError(504, "UpstreamTimeout", f"The model service did not answer in time ({what}). {NOT_REPEATED}", may_have_worked=True)
    return upstream_error(f"The connection to the model service broke ({what}). {NOT_REPEATED}")
