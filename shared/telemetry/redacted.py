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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import Event, ReadableSpan
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
