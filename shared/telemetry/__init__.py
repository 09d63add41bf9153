"""OpenTelemetry traces and metrics of what the app does, and what they may carry.

    core             where spans and metrics go (use, setup), the policy (allowed), traced and Steps, the metrics
    instrumentation  the request span (RequestSpans) and the official httpx instrumentation
    redacted         what OpenTelemetry exports, redacted: log records (redact_exported_logs), spans (RedactedSpans),
                     request URLs of spans others make (redact_request_urls)

A thin core the domain calls: it imports no module of the service. Each room describes its own traced
steps beside the function they trace (``@telemetry.traced("images.generate", Steps(...))`` on
``ImageService.generate``, ``images.validate`` on ``parse_request``, ``upstream.call`` and
``upstream.attempt`` in ``shared.upstream.client``, ``archive.write``, ``images.job``, ``job.state``):
which attributes its arguments, its result and its error carry, and which metrics it adds.

Where they go:

- In Azure the Functions host runs in OpenTelemetry mode (host.json ``"telemetryMode":
  "OpenTelemetry"``) and makes the span of every invocation. With the app setting
  ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` (the templates set it) the Python worker
  calls azure-monitor-opentelemetry's ``configure_azure_monitor()`` before it loads
  function_app.py: export to ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (Entra ID from
  ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``), httpx and the Azure SDKs instrumented, logs
  streamed, and each invocation run in the host's trace. The spans made here use those global
  providers, so they hang under the host's invocation span.
- Locally ``IMAGES_TELEMETRY_EXPORTER=console`` or ``file:<path>`` has :func:`setup` (called by
  the Runtime, once per process) install providers that write spans and metrics as JSON lines.
- Otherwise nothing listens, and every decorator here calls straight through.

Tests give providers of their own to :func:`use` (OpenTelemetry lets the global one be set once).

What telemetry may carry (the policy, enforced by :func:`allowed`): the attributes named in
:data:`ATTRIBUTES`; prompts (:data:`PROMPT_ATTRIBUTES`) only with ``IMAGES_TELEMETRY_PROMPTS=true``;
an error as its code or type, never its message (it can quote upstream or a URL) and never as an
exception event. No header, body or query string becomes an attribute, so no key, token or SAS
does. The request span is made here (:class:`RequestSpans`); FastAPI's own request span and
opentelemetry-instrumentation-fastapi's (which the distro turns on) are kept off: both record the
query string, where Azure callers put the function key (``?code=``), and the host reports the
request already (a second server span counts it twice).

What others record can quote an exception: OpenTelemetry's log handler (the one the worker streams logs
with) exports ``exception.message`` and ``exception.stacktrace`` from the live exception, past every log
filter. :func:`redact_exported_logs`, called with the log hygiene, passes them through
:func:`shared.redaction.redact` like the message. The instrumentations' spans can quote one too (httpx
records a failed request's exception as an event, the Azure SDKs put its text in the status): the local
exporter (:func:`setup`) writes them through :class:`RedactedSpans`. And in Azure the worker's own FastAPI app
(the HTTP streams extension's) gets a server span with the query string from FastAPI's or the distro's
instrumentation: :func:`redact_request_urls`, called with the log hygiene, hides ``code`` and ``sig`` there.
"""

from __future__ import annotations

from shared.telemetry.core import (
    ATTRIBUTES,
    LABELS,
    PROMPT_ATTRIBUTES,
    Steps,
    allowed,
    annotate,
    count_attempt,
    error_type,
    exporter_pipeline,
    instruments,
    labels_of,
    setup,
    trace_azure_sdks,
    traced,
    use,
)
from shared.telemetry.instrumentation import FASTAPI_TELEMETRY, RequestSpans, instrument_app, instrument_httpx
from shared.telemetry.redacted import (
    RedactedSpans,
    RedactExportedLogs,
    RedactRequestUrls,
    redact_exported_logs,
    redact_request_urls,
)

__all__ = [
    "ATTRIBUTES",
    "FASTAPI_TELEMETRY",
    "LABELS",
    "PROMPT_ATTRIBUTES",
    "RedactExportedLogs",
    "RedactRequestUrls",
    "RedactedSpans",
    "RequestSpans",
    "Steps",
    "allowed",
    "annotate",
    "count_attempt",
    "error_type",
    "exporter_pipeline",
    "instrument_app",
    "instrument_httpx",
    "instruments",
    "labels_of",
    "redact_exported_logs",
    "redact_request_urls",
    "setup",
    "trace_azure_sdks",
    "traced",
    "use",
]
