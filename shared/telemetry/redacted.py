"""What leaves the process through OpenTelemetry, passed through the same redaction as the app's log lines.

Logs: OpenTelemetry's ``LoggingHandler`` (azure-monitor-opentelemetry puts one on the root logger) builds
each exported record itself. Its body comes from the message, which :class:`~shared.redaction.RedactSecrets`
rewrites, but ``exception.message`` and ``exception.stacktrace`` come from ``record.exc_info``, the live
exception, and ``extra=`` fields become attributes as they are: no log filter reaches those. On that handler
:class:`RedactExportedLogs` writes the exception's attributes itself, redacted, and takes ``exc_info`` off the
record so the handler cannot format it again. The record is shared by every handler: the ones after keep the
traceback as standard formatters print it, from ``exc_text`` (redacted).

Spans: :class:`RedactedSpans` wraps a span exporter; every string of a span (status description, attributes,
event attributes such as an instrumentation's ``exception.message`` and ``exception.stacktrace``) is
redacted on the way out.

Request URLs: in Azure the Python worker serves HTTP with a FastAPI app of its own (the HTTP streams
extension), which this app cannot configure. FastAPI's native telemetry, or the OpenTelemetry FastAPI
instrumentation the Azure Monitor distro puts on every FastAPI app, records a server span for it with
the query string, where callers may put the function key (``?code=``). :class:`RedactRequestUrls`, a span
processor put on the global tracer provider at start (:func:`redact_request_urls`), rewrites those URL
attributes as each span starts, before any exporter can see them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from shared.redaction import RedactSecrets, redact

if TYPE_CHECKING:
    from opentelemetry.util.types import Attributes

# A LogRecord's own fields; any other field came from extra= and becomes an exported attribute.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _redacted(value: Any) -> Any:
    """``value`` with every string in it redacted (attribute values: strings, lists, tuples, mappings)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_redacted(item) for item in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


class RedactExportedLogs(RedactSecrets):
    """RedactSecrets for an OpenTelemetry log handler: also the exception and the extra fields it exports."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place (message, exception, extra fields); never drops it."""
        super().filter(record)
        if record.exc_info and record.exc_info[1] is not None:
            kind, exc, _ = record.exc_info
            stacktrace = redact(record.exc_text or logging.Formatter().formatException(record.exc_info))
            record.__dict__["exception.type"] = kind.__name__ if kind else type(exc).__name__
            if exc.args:  # what the handler would export: the first argument
                record.__dict__["exception.message"] = redact(str(exc.args[0]))
            record.__dict__["exception.stacktrace"] = stacktrace + "\n"  # as traceback.format_exception ends it
            record.exc_text, record.exc_info = stacktrace, None  # formatters print exc_text; the handler reads exc_info
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS:
                record.__dict__[key] = _redacted(value)
        return True


def is_opentelemetry_handler(handler: logging.Handler) -> bool:
    """True for OpenTelemetry's LoggingHandler (opentelemetry-instrumentation-logging's, the SDK's older one) and subclasses."""
    return any(cls.__module__.startswith("opentelemetry.") for cls in type(handler).__mro__)


def redact_exported_logs(*loggers: logging.Logger | str) -> None:
    """Put :class:`RedactExportedLogs` on every OpenTelemetry log handler of the root logger (and of ``loggers``).

    Call it at start, after the platform has installed its handlers (in Azure the worker does before it loads
    function_app.py). Idempotent.
    """
    chosen = [logging.getLogger()] + [logging.getLogger(x) if isinstance(x, str) else x for x in loggers]
    for handler in (h for logger in chosen for h in logger.handlers if is_opentelemetry_handler(h)):
        if not any(isinstance(f, RedactExportedLogs) for f in handler.filters):
            handler.addFilter(RedactExportedLogs())


def _redacted_attributes(attributes: Attributes) -> dict[str, Any]:
    return {key: _redacted(value) for key, value in (attributes or {}).items()}


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` whose status description, attributes and event attributes are redacted."""
    description = span.status.description
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redacted_attributes(span.attributes),
        events=[Event(e.name, _redacted_attributes(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, redact(description)) if description else span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactedSpans(SpanExporter):
    """A span exporter that hands ``exporter`` each span redacted (:func:`redacted_span`)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([redacted_span(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


# Query parameters that carry a credential: the Functions key, a SAS signature.
SECRET_QUERY_PARAMETERS = frozenset({"code", "sig"})
# Span attributes that hold a request's query, alone or in a URL (current and older HTTP conventions).
_QUERY_ATTRIBUTES = ("url.query",)
_redacting_urls: weakref.WeakSet[TracerProvider] = weakref.WeakSet()  # providers RedactRequestUrls is on
_URL_ATTRIBUTES = ("url.full", "http.target", "http.url")


def redacted_query(query: str) -> str:
    """``query`` with the values of :data:`SECRET_QUERY_PARAMETERS` replaced by ``***`` (and any other secret shape redacted)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in SECRET_QUERY_PARAMETERS for key, _ in pairs):
        query = urlencode([(key, "***" if key.lower() in SECRET_QUERY_PARAMETERS else value) for key, value in pairs], safe="*")
    return redact(query)


def redacted_url(url: str) -> str:
    """``url`` (absolute, or a path with a query) with its query passed through :func:`redacted_query`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=redacted_query(parts.query))) if parts.query else redact(url)


class RedactRequestUrls(SpanProcessor):
    """A span processor that rewrites a starting span's URL and query attributes (:func:`redacted_url`)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        for key, redact_value in [*((k, redacted_query) for k in _QUERY_ATTRIBUTES), *((k, redacted_url) for k in _URL_ATTRIBUTES)]:
            value = attributes.get(key)
            if isinstance(value, str) and (clean := redact_value(value)) != value:
                span.set_attribute(key, clean)


def redact_request_urls(provider: trace.TracerProvider | None = None) -> bool:
    """Put :class:`RedactRequestUrls` on ``provider`` (the global one by default) if it is the SDK's; True when it is there.

    Call it at start, after the platform has configured OpenTelemetry (in Azure the worker does before it
    loads function_app.py). Idempotent.
    """
    provider = provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False  # the API's no-op or proxy provider: nothing records
    if provider not in _redacting_urls:
        provider.add_span_processor(RedactRequestUrls())
        _redacting_urls.add(provider)
    return True
