"""How secrets stay out of logs and error messages.

:func:`redact` replaces every value :func:`remember_secret` was told about and every
key, token and SAS signature shape with ``***``. :class:`RedactSecrets` is the logging
filter the app installs on its handlers (:func:`install_log_hygiene`), a second line of
defence behind code that never logs a secret in the first place. :func:`reason` turns an
exception (often an SDK's, whose text may quote a URL with a SAS or a header) into a short
explanation that is safe to put in an error body or a log line. :func:`scrub` makes text
from outside (an upstream error message, which may echo what it was sent) safe to pass on:
redacted more eagerly than logs (bare key shapes too), without control characters, capped.
"""

from __future__ import annotations

import errno
import logging
import re
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import AzureError, HttpResponseError

_KNOWN_SECRETS: tuple[str, ...] = ()  # replaced, never mutated: read by logging threads without a lock
_MAX_KNOWN_SECRETS = 16
_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JWTs anywhere (Entra access tokens, id tokens): header.payload.signature, both JSON objects.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "***"),
    # Bearer <token>; 16+ characters so "Bearer authorization=..." in a challenge header stays readable.
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*"), r"\1***"),
    # Authorization: SharedKey account:signature, Basic ..., anything but Bearer (handled above).
    # Only the header form "authorization:": the challenge's authorization="https://login..." is an address.
    (re.compile(r"(?i)(authorization[\"']?\s*:\s*[\"']?)(?!\s|bearer\s)[^\"'\r\n,}]+"), r"\1***"),
    # Header- and setting-shaped keys: api-key: X, "api-key": "X", AZURE_OPENAI_API_KEY=X, AccountKey=X, ...
    (
        re.compile(
            r"(?i)((?:api[-_]?key|ocp-apim-subscription-key|x-identity-header|x-functions-key|client[-_]?secret"
            r"|accountkey|sharedaccesskey|password)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,;&}\]]+"
        ),
        r"\1***",
    ),
    # SAS signatures in URLs and SAS connection strings.
    (re.compile(r"(?i)(\bsig=)[^&\s\"'#;]+"), r"\1***"),
    (re.compile(r"(?i)(SharedAccessSignature=)[^;\s\"']+"), r"\1***"),
    # OAuth token responses: "access_token": "...", refresh_token=...
    (re.compile(r"(?i)([\"']?(?:access_token|refresh_token|id_token)[\"']?\s*[:=]\s*[\"']?)[^\"'\s,}&]+"), r"\1***"),
)

# Bare key shapes, for text from outside only (in logs they would eat ordinary ids): an Azure OpenAI
# key (32 hex characters), the newer 84-character keys and any long token-like run, OpenAI's sk-... keys.
_BARE_KEYS = re.compile(r"\b[0-9A-Fa-f]{32}\b|\bsk-[A-Za-z0-9_-]{16,}|(?<![A-Za-z0-9+_-])(?=[A-Za-z0-9+_-]*\d)[A-Za-z0-9+_-]{40,}={0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
SCRUB_LIMIT = 400

AZURE_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def remember_secret(value: str) -> None:
    """Redact this exact value from logs from now on (the key read from the vault or a setting)."""
    global _KNOWN_SECRETS
    if len(value) >= _MIN_SECRET_LENGTH and value not in _KNOWN_SECRETS:
        _KNOWN_SECRETS = (value, *_KNOWN_SECRETS)[:_MAX_KNOWN_SECRETS]


def redact(text: str) -> str:
    """``text`` with every known secret and every key, token or signature shape replaced by ``***``."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub(text: str, limit: int = SCRUB_LIMIT) -> str:
    """Text from outside made safe to pass on: :func:`redact`, bare key shapes removed, control
    characters turned into spaces, whitespace collapsed, at most ``limit`` characters."""
    text = _CONTROL.sub(" ", text[: limit * 4])  # what is cut off later need not be scanned
    text = _BARE_KEYS.sub("***", redact(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RedactSecrets(logging.Filter):
    """A handler filter that rewrites each record with :func:`redact` (message, arguments, traceback).

    Install it on handlers, not loggers: a logger's filters do not see records
    that propagate from child loggers such as ``azure.*``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's error path
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters cache the formatted traceback here and reuse it, so redacting it once is enough.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_hygiene(*loggers: logging.Logger | str, azure_http_level: int = logging.WARNING) -> RedactSecrets:
    """Put :class:`RedactSecrets` on every handler of the root logger (and of ``loggers``); quiet azure HTTP logs.

    The azure-core HTTP logging policy logs every request and response at INFO;
    it is set to ``azure_http_level`` unless someone already chose its level.
    Call it once at start, after the host has installed its handlers.
    """
    chosen = [logging.getLogger()] + [logging.getLogger(x) if isinstance(x, str) else x for x in loggers]
    found = next((f for lg in chosen for h in lg.handlers for f in h.filters if isinstance(f, RedactSecrets)), None)
    redactor = found or RedactSecrets()
    for logger in chosen:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(redactor)
    http_logger = logging.getLogger(AZURE_HTTP_LOGGER)
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(azure_http_level)
    return redactor


def strip_query(url: str) -> str:
    """``url`` without its query and fragment (where SAS signatures and identity secrets travel)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None)  # azure-core keeps the transport's error here
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or (inner if isinstance(inner, BaseException) else None) or context


def _network_reason(exc: BaseException, limit: int) -> str | None:
    """The root network cause in a few words, if there is one: what an operator acts on."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted: " + redact(str(cause.verify_message or cause))[:limit]
        if isinstance(cause, ConnectionRefusedError) or (isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED):
            return "connection refused"
        if cause.__class__.__name__ == "gaierror":
            return "host name not found"
        if isinstance(cause, TimeoutError):
            return "timed out"
    return None


def reason(exc: BaseException, limit: int = 300) -> str:
    """A short, redacted explanation of ``exc`` for an error message or a log line."""
    network = _network_reason(exc, limit)
    if network is not None:
        return network
    if isinstance(exc, HttpResponseError) and exc.status_code:
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or exc.reason or ""
        message = getattr(error, "message", None) or (exc.message or "").split("\n", 1)[0]
        if message and message.startswith(f"({code}) "):  # azure-core prefixes "(code) " to the message
            message = message[len(code) + 3 :]
        text = f"HTTP {exc.status_code}" + (f" {code}" if code and code != "None" else "") + (f": {message}" if message else "")
    else:
        text = (exc.message if isinstance(exc, AzureError) and exc.message else str(exc)) or type(exc).__name__
    text = re.sub(r"\bssl:(<[^>]*>|default)\s*", "", text)  # aiohttp's connector repr says nothing useful
    text = re.sub(r"https?://[^\s'\"<>]+", lambda m: strip_query(m.group(0)), text)  # query strings may hold SAS
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
