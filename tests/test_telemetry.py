"""Telemetry: the spans and metrics of a generation, a throttled job and a failed job, read from the
SDK's in-memory exporters, and what they must never carry (a key, a token, a SAS signature, a prompt).

The app runs in process against real Azurite and the simulator (storage and upstream are part of
what is traced). The Azure SDKs trace to the global tracer provider, which OpenTelemetry lets a
process set once: while this module runs it is :data:`PROVIDER`, and the app's own spans and
metrics are handed to providers of the test with ``telemetry.use``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.settings import settings as azure_settings
from azure.functions.queue import QueueMessage as TriggerMessage
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from local.azurite import Azurite
from shared import telemetry
from shared.jobs import JobRetry, Outcome
from shared.pricing import recorded_usd
from shared.redaction import redact
from shared.runtime import Runtime
from shared.settings import Settings, SettingsError
from tests.conftest import SIM_KEY, SimControl, base_env

ROOT = Path(__file__).resolve().parent.parent
SPANS = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(SPANS))

PROMPT = "A lighthouse keeper's cat asleep on a brass telescope"
GENERATE = "/openai/deployments/{}/images/generations?api-version=2025-04-01-preview"
SUBMIT = "/openai/deployments/{}/images/generations:submit?api-version=2025-04-01-preview"


@pytest.fixture(scope="module")
def global_provider() -> Iterator[None]:
    """The Azure SDKs' spans go to the global provider: PROVIDER, while this module runs."""
    trace.set_tracer_provider(PROVIDER)
    assert trace.get_tracer_provider() is PROVIDER, "another test set the global tracer provider first"
    telemetry.trace_azure_sdks()
    yield
    azure_settings.tracing_implementation.unset_value()
    SPANS.shutdown()  # the global provider stays; what later tests record is dropped


@dataclass
class Capture:
    """What the app recorded: finished spans and metrics."""

    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(SPANS.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in self.spans()]}"
        return found[0]

    def children(self, parent: ReadableSpan) -> list[str]:
        """Names of ``parent``'s children, in the order they started."""
        kids = [s for s in self.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id]
        return [s.name for s in sorted(kids, key=lambda s: s.start_time or 0)]

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """(attributes, value) of each data point of metric ``name``: a sum's value, a histogram's count."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in (m for m in scope.metrics if m.name == name):
                    found += [(dict(p.attributes or {}), getattr(p, "value", getattr(p, "count", 0))) for p in metric.data.data_points]
        return found

    def texts(self) -> list[str]:
        """Every string telemetry holds: span names, statuses, attributes, events, resources; metric attributes."""
        texts: list[str] = []
        for span in self.spans():
            texts += [span.name, span.status.description or ""]
            for attributes in (span.attributes, span.resource.attributes, *(e.attributes for e in span.events)):
                texts += [f"{k}={v}" for k, v in (attributes or {}).items()]
            texts += [e.name for e in span.events]
        texts += [f"{k}={v}" for attributes, _ in (p for n in self.metric_names() for p in self.points(n)) for k, v in attributes.items()]
        return texts

    def metric_names(self) -> list[str]:
        data = self.reader.get_metrics_data()
        return [m.name for r in (data.resource_metrics if data else []) for s in r.scope_metrics for m in s.metrics]


def assert_clean(capture: Capture, azurite: Azurite, *also: str) -> None:
    """No key, token or SAS in any span, event or metric attribute: neither a known value nor anything shaped like one."""
    forbidden = [SIM_KEY, azurite.connection_string.split("AccountKey=")[1].split(";")[0], *also]
    texts = capture.texts()
    assert len(texts) > 20, "nothing recorded: the check would prove nothing"
    for text in texts:
        assert redact(text) == text, f"a secret shape in telemetry: {text[:200]}"
        for value in forbidden:
            assert value not in text, f"{value[:12]}... in telemetry: {text[:200]}"


@pytest.fixture()
def capture(global_provider: None, request: pytest.FixtureRequest) -> Iterator[Capture]:
    """The app's spans (PROVIDER) and metrics (an in-memory reader); prompts only when the test asks (indirect param)."""
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    telemetry.use(PROVIDER, meters, prompts=getattr(request, "param", False))
    SPANS.clear()
    yield Capture(reader)
    telemetry.use()
    SPANS.clear()
    meters.shutdown()


@dataclass
class App:
    """The API in process and the queue trigger's runtime, on one queue of their own."""

    client: httpx.AsyncClient
    trigger: Runtime
    queue: str

    async def deliver(self, dequeue_count: int | None = None) -> Outcome:
        """Take the next message off the queue and run it as the Functions trigger does."""
        received = await self.trigger.service.queues.get_queue_client(self.queue).receive_message()
        assert received is not None, "no message on the queue"
        count = dequeue_count or received.dequeue_count
        SPANS.clear()  # the job's own trace only
        return await self.trigger.handle_queue_message(TriggerMessage(id=received.id, body=received.content.encode(), dequeue_count=count))


@pytest.fixture()
async def app(
    capture: Capture, in_process: Callable[..., Awaitable[httpx.AsyncClient]], make_settings: Callable[..., Settings]
) -> AsyncIterator[App]:
    queue = f"telemetry-{uuid.uuid4().hex[:8]}"
    client = await in_process(IMAGES_QUEUE=queue)
    async with Runtime(make_settings(IMAGES_QUEUE=queue)) as trigger:
        yield App(client, trigger, queue)


async def test_a_generation_is_one_trace_from_request_to_archive(app: App, capture: Capture, azurite: Azurite) -> None:
    response = await app.client.post(GENERATE.format("gpt-image-1"), json={"prompt": PROMPT, "size": "1024x1024", "quality": "low"})
    assert response.status_code == 200, response.text
    signature = response.json()["data"][0]["url"].split("sig=")[1].split("&")[0]
    cost = float(response.headers["x-images-cost-usd"])  # from the record the service wrote

    request = capture.one("POST /openai/deployments/{deployment}/images/generations")
    assert request.parent is None and request.kind is SpanKind.INTERNAL
    assert {s.context.trace_id for s in capture.spans()} == {request.context.trace_id}
    assert capture.children(request) == ["images.validate", "images.generate"]
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST", "http.route": "/openai/deployments/{deployment}/images/generations", "http.response.status_code": 200
    }  # fmt: skip
    generate = capture.one("images.generate")
    # The caller's index entry (two names, the jobs container made first, and the first of the day noted in the index's
    # lists of days and callers) is written while upstream works (shared/callers/books.py): storage calls beside the steps.
    steps = [name for name in capture.children(generate) if not name.startswith(("ContainerClient.", "BlobClient."))]
    assert steps == ["upstream.call", "archive.write"]
    index_calls = set(capture.children(generate)) - set(steps)  # the lists are written only by the first entry of their day
    assert "ContainerClient.upload_blob" in index_calls
    assert index_calls <= {"ContainerClient.create_container", "ContainerClient.upload_blob", "ContainerClient.download_blob", "BlobClient.upload_blob"}
    attempt = capture.one("upstream.attempt")
    assert capture.children(capture.one("upstream.call")) == ["upstream.attempt"]
    assert [(s.kind, s.attributes["http.status_code"]) for s in capture.named("POST") if s.parent and s.parent.span_id == attempt.context.span_id] == [
        (SpanKind.CLIENT, 200)
    ]
    assert capture.children(capture.one("archive.write")) == ["ContainerClient.upload_blob", "ContainerClient.upload_blob"]

    assert {k: v for k, v in (generate.attributes or {}).items() if k != "images.bytes"} == {
        "images.deployment": "gpt-image-1", "images.model_family": "gpt-image-1", "images.kind": "sync",
        "images.generation_id": response.headers["x-request-id"], "images.n": 1, "images.count": 1,
        "images.upstream_attempts": 1, "gen_ai.usage.input_tokens": response.json()["usage"]["input_tokens"],
        "gen_ai.usage.output_tokens": response.json()["usage"]["output_tokens"],
        "images.cost": cost, "images.cost.currency": "USD",
    }  # fmt: skip
    assert generate.attributes["images.bytes"] == capture.one("archive.write").attributes["images.bytes"] > 100_000
    assert dict(attempt.attributes or {}) == {"server.address": "127.0.0.1", "images.upstream.attempt": 1, "http.response.status_code": 200}
    assert capture.one("images.validate").attributes["images.quality"] == "low"

    labels = {"images.deployment": "gpt-image-1", "images.model_family": "gpt-image-1", "images.kind": "sync"}
    assert capture.points("images.generations") == [(labels, 1)]
    assert capture.points("images.images") == [(labels, 1)]
    assert capture.points("images.generation.duration") == [(labels, 1)]
    assert sorted(capture.points("images.tokens"), key=str) == sorted(
        [({**labels, "gen_ai.token.type": "input"}, generate.attributes["gen_ai.usage.input_tokens"]),
         ({**labels, "gen_ai.token.type": "output"}, generate.attributes["gen_ai.usage.output_tokens"])], key=str
    )  # fmt: skip
    assert capture.points("images.cost") == [({**labels, "images.cost.currency": "USD"}, cost)] and cost > 0
    assert capture.points("images.failures") == []
    assert_clean(capture, azurite, PROMPT, "lighthouse", signature)


@pytest.mark.parametrize("capture", [True], indirect=True, ids=["prompts-on"])
async def test_prompts_go_into_spans_only_when_the_setting_says_so(app: App, capture: Capture, azurite: Azurite) -> None:
    response = await app.client.post(GENERATE.format("dall-e-3"), json={"prompt": PROMPT, "size": "1024x1024"})
    assert response.status_code == 200, response.text
    assert capture.one("images.validate").attributes["images.prompt"] == PROMPT
    assert capture.one("images.generate").attributes["images.revised_prompt"] == response.json()["data"][0]["revised_prompt"]
    with pytest.raises(AssertionError, match="in telemetry"):
        assert_clean(capture, azurite, PROMPT)  # the check the other tests make does see a prompt
    telemetry.use(PROVIDER, prompts=False)  # the same attributes, with the setting off
    assert telemetry.allowed({"images.prompt": PROMPT, "images.revised_prompt": "x", "images.n": 1}) == {"images.n": 1}


async def test_a_refused_request_names_its_error_code_never_its_message(app: App, capture: Capture, azurite: Azurite) -> None:
    response = await app.client.post(GENERATE.format("gpt-image-1"), json={"prompt": PROMPT, "n": 99})
    assert response.status_code == 400
    code = response.json()["error"]["code"]

    validate = capture.one("images.validate")
    assert validate.status.status_code is StatusCode.ERROR and validate.status.description == code
    assert validate.attributes["error.type"] == code and validate.events == ()  # no exception event, no message
    assert capture.named("images.generate") == []
    assert capture.one("POST /openai/deployments/{deployment}/images/generations").attributes["http.response.status_code"] == 400
    labels = {"images.deployment": "gpt-image-1", "images.model_family": "gpt-image-1"}
    assert capture.points("images.failures") == [({**labels, "error.type": code}, 1)]
    assert_clean(capture, azurite, PROMPT, response.json()["error"]["message"])


async def test_a_throttled_job_is_deferred_with_the_retry_after_it_was_given(app: App, capture: Capture, sim: SimControl, azurite: Azurite) -> None:
    sim.configure(quota_requests=1, quota_window_seconds=3600)
    assert (await app.client.post(GENERATE.format("gpt-image-1-mini"), json={"prompt": "the quota's one request"})).status_code == 200
    submitted = await app.client.post(SUBMIT.format("gpt-image-1-mini"), json={"prompt": PROMPT})
    job_id = submitted.json()["id"]

    outcome = await app.deliver()
    assert outcome.action == "deferred"
    job = capture.one("images.job")
    assert job.parent is None and {s.context.trace_id for s in capture.spans()} == {job.context.trace_id}
    assert (job.attributes["images.job_id"], job.attributes["images.job.outcome"], job.attributes["images.dequeue_count"]) == (job_id, "deferred", 1)
    generate = capture.one("images.generate")
    assert (generate.attributes["images.kind"], generate.attributes["images.generation_id"], generate.attributes["error.type"]) == ("job", job_id, "429")
    attempt = capture.one("upstream.attempt")
    assert attempt.attributes["http.response.status_code"] == 429 and attempt.status.status_code is StatusCode.ERROR
    assert 0 < attempt.attributes["images.upstream.retry_after_s"] <= 3600
    states = [(s.attributes["images.job.status"], s.attributes["images.job.event"]) for s in capture.named("job.state")]
    assert states == [("running", "running"), ("notRunning", "throttled")]
    assert all(s.attributes["images.job_id"] == job_id and s.attributes["images.job.written"] for s in capture.named("job.state"))

    labels = {"images.deployment": "gpt-image-1-mini", "images.model_family": "gpt-image-1-mini", "images.kind": "job"}
    assert capture.points("images.upstream.throttles") == [(labels, 1)]
    assert capture.points("images.generations") == [(labels | {"images.kind": "sync"}, 1)]  # the quota's request; the job made none
    assert ({**labels, "error.type": "429"}, 1) in capture.points("images.generation.duration")
    assert_clean(capture, azurite, PROMPT)


async def test_a_job_failing_on_its_last_delivery_is_recorded_failed_with_its_code(app: App, capture: Capture, azurite: Azurite) -> None:
    submitted = await app.client.post(SUBMIT.format("gpt-image-1"), json={"prompt": f"{PROMPT} [[fail:503]]"})
    job_id = submitted.json()["id"]

    with pytest.raises(JobRetry):  # the host moves the message to the poison queue
        await app.deliver(dequeue_count=app.trigger.jobs.max_dequeue_count)
    job = capture.one("images.job")
    assert job.status.status_code is StatusCode.ERROR and job.attributes["error.type"] == "JobRetry"
    assert job.attributes["images.job_id"] == job_id and "images.job.outcome" not in job.attributes
    generate = capture.one("images.generate")
    assert generate.attributes["error.type"] == "UpstreamError" and generate.status.description == "UpstreamError"
    assert capture.one("upstream.attempt").attributes["http.response.status_code"] == 503
    assert [s.attributes["images.job.status"] for s in capture.named("job.state")] == ["running", "failed"]
    labels = {"images.deployment": "gpt-image-1", "images.model_family": "gpt-image-1", "images.kind": "job"}
    assert capture.points("images.failures") == [({**labels, "error.type": "UpstreamError"}, 1)]
    assert capture.points("images.upstream.throttles") == []
    assert_clean(capture, azurite, PROMPT, "[[fail:503]]")


async def test_the_request_span_never_carries_the_query_and_replaces_the_fastapi_instrumentation(capture: Capture) -> None:
    """In Azure the distro instruments every FastAPI app (a second request span, with ?code=): create_app takes it off."""
    app = FastAPI(telemetry=telemetry.FASTAPI_TELEMETRY)

    @app.get("/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=PROVIDER)
    telemetry.instrument_app(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        assert (await client.get("/things/a?code=function-key-0123456789")).status_code == 200
    assert [(s.name, s.kind) for s in capture.spans()] == [("GET /things/{name}", SpanKind.INTERNAL)]
    assert not any("function-key" in text for text in capture.texts())


def test_a_process_with_the_file_exporter_writes_its_spans_there_as_json_lines(tmp_path: Path) -> None:
    """What `IMAGES_TELEMETRY_EXPORTER=file:spans.jsonl python3 dev.py serve` does, in a process of its own
    (set-up changes global state): the first runtime sets telemetry up, a second one changes nothing."""
    target = tmp_path / "spans.jsonl"
    env = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    program = f"""
from shared.models import parse_request
from shared.runtime import Runtime
from shared.settings import Settings
Runtime(Settings.from_env({{**{env!r}, "IMAGES_TELEMETRY_EXPORTER": "file:{target}"}}))
Runtime(Settings.from_env({{**{env!r}, "IMAGES_TELEMETRY_EXPORTER": "console", "IMAGES_TELEMETRY_PROMPTS": "true"}}))
parse_request({{"prompt": {PROMPT!r}}}, "gpt-image-1", "gpt-image-1")
"""
    run = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    span = next(line for line in lines if line.get("name") == "images.validate")
    assert span["attributes"]["images.deployment"] == "gpt-image-1"
    assert span["resource"]["attributes"]["service.name"] == telemetry.core.SERVICE_NAME
    assert PROMPT not in target.read_text() and "images.validate" not in run.stdout  # the second runtime's settings did nothing


def test_logs_the_worker_exports_pass_through_the_redaction(azurite: Azurite) -> None:
    """With PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY the worker puts the distro's OpenTelemetry log handler on the
    root logger before it loads function_app.py; Runtime.from_env then filters it like every other handler, and
    redacts the exception it exports too (tests/test_telemetry_redaction.py has the details)."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    logging.getLogger().addHandler(handler)
    try:
        Runtime.from_env(base_env(azurite, "http://127.0.0.1:1"))
        logging.getLogger("shared.telemetry.test").warning("upstream refused api-key: %s", SIM_KEY)
        try:
            raise ConnectionError(f"sent api-key: {SIM_KEY}")
        except ConnectionError:
            logging.getLogger("shared.telemetry.test").exception("upstream failed")
    finally:
        logging.getLogger().removeHandler(handler)
        provider.shutdown()
    records = [log.log_record for log in exporter.get_finished_logs()]
    assert [str(record.body) for record in records[-2:]] == ["upstream refused api-key: ***", "upstream failed"]
    attributes = dict(records[-1].attributes or {})
    assert attributes["exception.message"] == "sent api-key: ***"
    assert str(attributes["exception.stacktrace"]).endswith("ConnectionError: sent api-key: ***\n")
    assert not any(SIM_KEY in f"{record.body} {record.attributes}" for record in records)


def test_the_cost_metric_reads_what_a_record_carries() -> None:
    assert recorded_usd({"cost": {"usd": 0.04, "basis": "gpt-image-2 per 1M tokens"}}) == 0.04
    assert [recorded_usd(r) for r in ({}, {"cost": None}, {"cost": {"usd": None}}, {"cost": {"usd": True}}, {"cost": 0.04})] == [None] * 5


@pytest.mark.parametrize(("value", "ok"), [("none", True), ("console", True), ("file:spans.jsonl", True), ("file:", False), ("otlp", False)])
def test_the_exporter_setting_is_checked(value: str, ok: bool) -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    env["IMAGES_TELEMETRY_EXPORTER"] = value
    if ok:
        assert Settings.from_env(env).telemetry_exporter == value
    else:
        with pytest.raises(SettingsError, match="IMAGES_TELEMETRY_EXPORTER"):
            Settings.from_env(env)


async def test_a_streamed_generation_is_a_generation_of_kind_stream_and_a_cut_one_a_failure(app: App, capture: Capture) -> None:
    url = GENERATE.format("gpt-image-2")
    response = await app.client.post(url, json={"prompt": PROMPT, "stream": True, "partial_images": 1})
    assert response.status_code == 200 and "image_generation.completed" in response.text
    generate = capture.one("images.generate")
    assert generate.attributes is not None and generate.attributes["images.kind"] == "stream"
    labels = {"images.deployment": "gpt-image-2", "images.model_family": "gpt-image-2", "images.kind": "stream"}
    assert capture.points("images.generations") == [(labels, 1)]
    cut = await app.client.post(url, json={"prompt": "x [[stream-cut:1]]", "stream": True, "partial_images": 2})
    assert "event: error" in cut.text
    assert capture.points("images.failures") == [({**labels, "error.type": "UpstreamError"}, 1)]
