"""What OpenTelemetry exports passes through the app's redaction, read from real SDK pipelines in process.

Logs: OpenTelemetry's log handler (the one the Functions worker puts on the root logger) builds
``exception.message`` and ``exception.stacktrace`` from the live exception and turns ``extra=`` fields
into attributes, past the log filter that rewrites the message. Spans: an instrumentation's span that
ends in an exception gets an ``exception`` event and the exception's text as its status.

The secrets are made up when the tests run, so no key-shaped literal sits in the repository.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import telemetry
from shared.api.hosting import AppResponse
from shared.redaction import RedactSecrets
from shared.telemetry.redacted import redacted_query, redacted_url

SAS_QUERY = "sv=2025-05-05&sr=b&sp=r&se=2026-11-30T10%3A00%3A00Z&sig="
URL = "https://account.blob.core.windows.net/images/2026/11/a.png"
# Each secret's place in TEXT, as redact() leaves it.
REDACTED = f"GET {URL}?{SAS_QUERY}*** answered 403; sent api-key: *** and Authorization: Bearer ***"


@dataclass(frozen=True)
class Secrets:
    """A SAS signature, a model key and an Entra token, new for each test."""

    signature: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def text(self) -> str:
        """The three where errors quote them: a SAS URL, the api-key header, the Authorization header."""
        return f"GET {URL}?{SAS_QUERY}{self.signature} answered 403; sent api-key: {self.api_key} and Authorization: Bearer {self.token}"

    def assert_absent(self, text: str) -> None:
        for value in (self.signature, self.api_key, self.token):
            assert value not in text, f"a secret in what was exported: {text[:300]}"


@dataclass
class Logs:
    """A logger with OpenTelemetry's log handler (exporting to memory) and, after it, a console handler."""

    logger: logging.Logger
    exporter: InMemoryLogRecordExporter
    console: io.StringIO

    def one(self) -> tuple[str, dict[str, object]]:
        """The one exported record: its body and attributes."""
        (record,) = self.exporter.get_finished_logs()
        return str(record.log_record.body), dict(record.log_record.attributes or {})


@pytest.fixture()
def logs() -> Iterator[Logs]:
    """The handlers as they stand in Azure once the app has started: RedactSecrets on each (install_log_hygiene),
    and redact_exported_logs on OpenTelemetry's."""
    exporter, provider = InMemoryLogRecordExporter(), LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"tests.otel.{uuid.uuid4().hex[:8]}")
    logger.propagate, console = False, io.StringIO()
    for handler in (LoggingHandler(logger_provider=provider), logging.StreamHandler(console)):
        handler.addFilter(RedactSecrets())
        logger.addHandler(handler)
    telemetry.redact_exported_logs(logger)
    yield Logs(logger, exporter, console)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    provider.shutdown()


def test_an_error_log_is_exported_with_its_message_exception_and_stack_trace_redacted(logs: Logs) -> None:
    made_up = Secrets()
    try:
        try:
            raise ConnectionError(made_up.text())
        except ConnectionError as cause:
            raise RuntimeError(f"archive write failed: {cause}") from cause  # the cause is in the stack trace too
    except RuntimeError:
        logs.logger.exception("upload failed: %s", made_up.text(), extra={"blob_url": f"{URL}?{SAS_QUERY}{made_up.signature}"})

    body, attributes = logs.one()
    assert body == f"upload failed: {REDACTED}"
    assert attributes["exception.type"] == "RuntimeError"
    assert attributes["exception.message"] == f"archive write failed: {REDACTED}"
    stacktrace = str(attributes["exception.stacktrace"])
    assert stacktrace.startswith("Traceback (most recent call last):")
    assert f"ConnectionError: {REDACTED}" in stacktrace
    assert stacktrace.endswith(f"RuntimeError: archive write failed: {REDACTED}\n")
    assert attributes["blob_url"] == f"{URL}?{SAS_QUERY}***"
    made_up.assert_absent(json.dumps([body, attributes], default=str))
    # The handler after OpenTelemetry's prints the same traceback, redacted.
    printed = logs.console.getvalue()
    assert f"upload failed: {REDACTED}\nTraceback (most recent call last):" in printed
    assert f"ConnectionError: {REDACTED}" in printed
    made_up.assert_absent(printed)


def test_a_log_without_secrets_is_exported_unchanged(logs: Logs) -> None:
    logs.logger.warning(
        "archived %d images under %s", 2, "images/2026/11/", extra={"images.job_id": "job-1", "sizes": ["1024x1024"]}
    )
    body, attributes = logs.one()
    assert body == "archived 2 images under images/2026/11/"
    assert (attributes["images.job_id"], attributes["sizes"]) == ("job-1", ("1024x1024",))
    assert not any(key.startswith("exception.") for key in attributes)

    logs.exporter.clear()
    try:
        raise ValueError("size 999x999 is not one of 1024x1024, 1536x1024, 1024x1536")
    except ValueError as error:
        logs.logger.exception("refused")
        unfiltered = "".join(traceback.format_exception(error))  # what the handler alone would export
    body, attributes = logs.one()
    assert (body, attributes["exception.type"]) == ("refused", "ValueError")
    assert attributes["exception.message"] == "size 999x999 is not one of 1024x1024, 1536x1024, 1024x1536"
    assert attributes["exception.stacktrace"] == unfiltered


def test_spans_are_exported_with_their_exception_event_and_status_redacted() -> None:
    made_up, exporter = Secrets(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(telemetry.RedactedSpans(exporter)))
    tracer = provider.get_tracer("tests")
    with (
        pytest.raises(ConnectionError),
        tracer.start_as_current_span("GET", attributes={"url.full": f"{URL}?{SAS_QUERY}{made_up.signature}"}),
    ):
        raise ConnectionError(made_up.text())  # recorded as instrumentations do: an exception event, the text as status
    with tracer.start_as_current_span("images.validate", attributes={"images.size": "1024x1024", "images.n": 1}):
        pass
    provider.shutdown()

    failed, fine = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == f"ConnectionError: {REDACTED}"
    assert dict(failed.attributes or {}) == {"url.full": f"{URL}?{SAS_QUERY}***"}
    (event,) = failed.events
    assert event.name == "exception" and (event.attributes or {})["exception.message"] == REDACTED
    assert str((event.attributes or {})["exception.stacktrace"]).endswith(f"ConnectionError: {REDACTED}\n")
    made_up.assert_absent(failed.to_json())
    assert (fine.name, dict(fine.attributes or {}), fine.status.status_code) == (
        "images.validate",
        {"images.size": "1024x1024", "images.n": 1},
        StatusCode.UNSET,
    )


def test_the_local_exporter_writes_spans_redacted() -> None:
    """IMAGES_TELEMETRY_EXPORTER=console or file:<path>: the pipeline set-up installs, writing to a buffer."""
    made_up, out = Secrets(), io.StringIO()
    tracer_provider, meter_provider = telemetry.exporter_pipeline(out, metrics_every_seconds=3600)
    with pytest.raises(ConnectionError), tracer_provider.get_tracer("tests").start_as_current_span("GET"):
        raise ConnectionError(made_up.text())
    tracer_provider.shutdown()
    meter_provider.shutdown()
    (span,) = [json.loads(line) for line in out.getvalue().splitlines() if '"span_id"' in line]
    assert span["status"]["description"] == f"ConnectionError: {REDACTED}"
    assert span["events"][0]["attributes"]["exception.message"] == REDACTED
    made_up.assert_absent(out.getvalue())


def test_a_request_span_of_the_workers_fastapi_app_is_exported_without_the_function_key() -> None:
    """In Azure the worker's own FastAPI app (HTTP streams) gets a server span from FastAPI's native telemetry,
    query string included; here a FastAPI app traced the same way stands in for it, behind the real bridge."""
    key, exporter = secrets.token_urlsafe(30), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert telemetry.redact_request_urls(provider) and telemetry.redact_request_urls(provider)  # idempotent
    inner = FastAPI()

    @inner.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    outer = FastAPI(telemetry={"tracer_provider": provider})  # as the extension's WebApp, with a provider of its own

    @outer.get("/{path:path}")
    async def catch_all(request: Request) -> Response:
        return AppResponse(inner)

    with TestClient(outer) as client:
        assert client.get("/healthz", params={"api-version": "1", "code": key}).json() == {"status": "ok"}
    provider.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert (span.attributes or {})["url.query"] == "api-version=1&code=***"
    assert key not in span.to_json()


@pytest.mark.parametrize(
    ("value", "redacted"),
    [
        ("code=k3y&x=1", "code=***&x=1"),
        ("https://app.azurewebsites.net/gallery?code=k3y&day=2026-11-30", "https://app.azurewebsites.net/gallery?code=***&day=2026-11-30"),
        ("/images/a.png?CODE=k3y", "/images/a.png?CODE=***"),
        ("api-version=2025-04-01-preview", "api-version=2025-04-01-preview"),
        ("/gallery", "/gallery"),
    ],
)
def test_request_url_attributes_lose_the_function_key_and_signatures(value: str, redacted: str) -> None:
    assert (redacted_url if "/" in value else redacted_query)(value) == redacted
