"""The machinery: where spans and metrics go (:func:`use`, :func:`setup`), what they may carry
(:func:`allowed`), and the :func:`traced` decorator with its :class:`Steps`.

It knows no domain type: the domain describes its own steps (which attributes a call, its result and
its error carry) and hands them to :func:`traced`. An exception's ``code`` attribute, when it is a
string (as the service's errors have), is its ``error.type``; otherwise its class name is."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar, cast

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from shared.telemetry.redacted import RedactedSpans

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

SERVICE_NAME = "image-generation-functions"
# Every attribute this module may set; anything else is dropped by allowed().
ATTRIBUTES = frozenset(
    {
        "images.deployment", "images.model_family", "images.kind", "images.generation_id", "images.n",
        "images.size", "images.quality", "images.output_format", "images.count", "images.bytes",
        "images.upstream_attempts", "images.api_style", "images.upstream.attempt", "images.upstream.retry_after_s",
        "images.cost", "images.cost.currency", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
        "archive.concurrent", "images.job_id", "images.job.outcome", "images.job.status", "images.job.event",
        "images.job.attempts", "images.job.written", "images.dequeue_count", "messaging.message.id",
        "server.address", "http.request.method", "http.route", "http.response.status_code", "error.type",
    }
)  # fmt: skip
PROMPT_ATTRIBUTES = frozenset({"images.prompt", "images.revised_prompt"})
# The attributes metrics are broken down by (the generation's, also for what happens inside it).
LABELS = ("images.deployment", "images.model_family", "images.kind")
_MAX_TEXT = 4096


@dataclass
class _Pipeline:
    """Where this module's spans and metrics go: given providers (tests), else the global ones."""

    tracer_provider: trace.TracerProvider | None = None
    meter_provider: metrics.MeterProvider | None = None
    prompts: bool = False
    configured: bool = False  # setup() ran: later calls change nothing
    cache: dict[str, tuple[object, Any]] = field(default_factory=dict)  # tracer and instruments, per provider


_pipeline = _Pipeline()


def use(tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None, *, prompts: bool = False) -> None:
    """Send this module's spans and metrics to these providers (None: the global ones), with or without prompts."""
    _pipeline.tracer_provider, _pipeline.meter_provider, _pipeline.prompts = tracer_provider, meter_provider, prompts
    _pipeline.cache.clear()


def setup(*, exporter: str, prompts: bool) -> None:
    """This process's telemetry, called by the composition root: the first call decides, later ones change nothing.

    Records whether prompts may go into spans (``IMAGES_TELEMETRY_PROMPTS``). With ``exporter``
    (``IMAGES_TELEMETRY_EXPORTER``) console or file:<path>, installs global providers writing there
    and traces the Azure SDKs too; with none the global providers stay as the platform left them
    (configured by the Functions worker in Azure, none elsewhere: then nothing is recorded).
    """
    if _pipeline.configured:
        return
    _pipeline.configured, _pipeline.prompts = True, prompts
    target = exporter
    if target == "none":
        return
    # Open for the life of the process, line-buffered so a person can follow it with tail -f.
    out = sys.stdout if target == "console" else open(target.removeprefix("file:"), "a", encoding="utf-8", buffering=1)
    tracer_provider, meter_provider = exporter_pipeline(out)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    trace_azure_sdks()
    log.info("telemetry: spans and metrics go to %s", target)


def exporter_pipeline(out: IO[str], *, metrics_every_seconds: float = 30) -> tuple[SdkTracerProvider, SdkMeterProvider]:
    """Providers writing each finished span, and the metrics every ``metrics_every_seconds``, as one JSON line to ``out``."""
    resource = Resource.create({"service.name": SERVICE_NAME})
    tracer_provider = SdkTracerProvider(resource=resource)
    spans = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    tracer_provider.add_span_processor(SimpleSpanProcessor(RedactedSpans(spans)))  # an instrumentation's exception text too
    exporter = ConsoleMetricExporter(out=out, formatter=lambda data: data.to_json(indent=None) + "\n")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=metrics_every_seconds * 1000)
    return tracer_provider, SdkMeterProvider(metric_readers=[reader], resource=resource)


def trace_azure_sdks() -> None:
    """Spans for every Azure SDK call (Blob, Queue, Key Vault, identity), through azure-core-tracing-opentelemetry."""
    from azure.core.settings import settings as azure_settings

    azure_settings.tracing_implementation = "opentelemetry"


def listening_tracer_provider() -> trace.TracerProvider | None:
    """The tracer provider spans go to (the one given to :func:`use`, else the global one), or None when it is a no-op."""
    provider = _pipeline.tracer_provider or trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider) else provider


def current_tracer() -> trace.Tracer | None:
    """This module's tracer, or None when nothing listens (then decorated code runs untouched)."""
    provider = listening_tracer_provider()
    if provider is None:
        return None
    cached = _pipeline.cache.get("tracer")
    if cached is None or cached[0] is not provider:
        cached = _pipeline.cache["tracer"] = (provider, provider.get_tracer(SERVICE_NAME))
    return cast(trace.Tracer, cached[1])


class Instruments:
    """The app's metrics, by deployment (LABELS)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.generations = meter.create_counter("images.generations", "{generation}", "Generations answered or finished, archived")
        self.images = meter.create_counter("images.images", "{image}", "Images archived")
        self.tokens = meter.create_counter("images.tokens", "{token}", "Tokens upstream reported, by gen_ai.token.type")
        self.cost = meter.create_counter("images.cost", "{currency}", "Cost of generations whose record carries one, by images.cost.currency")
        self.failures = meter.create_counter("images.failures", "{failure}", "Refused requests and failed generations, by error.type")
        self.throttles = meter.create_counter("images.upstream.throttles", "{answer}", "429 answers from the model service")
        self.duration = meter.create_histogram("images.generation.duration", "s", "A generation: upstream with its retries, then the archive")


def current_meter_provider() -> metrics.MeterProvider:
    """The meter provider metrics go to: the one given to :func:`use`, else the global one."""
    return _pipeline.meter_provider or metrics.get_meter_provider()


def instruments() -> Instruments:
    """The app's instruments on the current meter provider (made once per provider)."""
    provider = current_meter_provider()
    cached = _pipeline.cache.get("instruments")
    if cached is None or cached[0] is not provider:
        cached = _pipeline.cache["instruments"] = (provider, Instruments(provider.get_meter(SERVICE_NAME)))
    return cast(Instruments, cached[1])


def allowed(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """``attributes`` as the policy lets them into telemetry: named ones, prompts only when switched on, plain values."""
    kept: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if not (key in ATTRIBUTES or (_pipeline.prompts and key in PROMPT_ATTRIBUTES)):
            continue
        if isinstance(value, str):
            kept[key] = value[:_MAX_TEXT]
        elif isinstance(value, bool | int | float):
            kept[key] = value
    return kept


def annotate(attributes: Mapping[str, object]) -> None:
    """Put ``attributes`` (as :func:`allowed` lets them) on the current span, if one is recording."""
    trace.get_current_span().set_attributes(allowed(attributes))


# --- spans around the app's steps -------------------------------------------------------------

Hook = Callable[[Mapping[str, Any]], Mapping[str, object]]


@dataclass(frozen=True)
class Steps:
    """What a traced step adds: attributes from its arguments (``before``), its result (``after``) and
    its error (``error``); ``failures`` counts its errors; ``generation`` makes it the scope of a
    generation (labels for what runs inside it, attempt numbers, the duration histogram)."""

    before: Hook | None = None
    after: Callable[[Any], Mapping[str, object]] | None = None
    error: Callable[[BaseException], Mapping[str, object]] | None = None
    failures: bool = False
    generation: bool = False


@dataclass
class Scope:
    """The generation a step runs in: its metric labels, and the upstream attempts made so far."""

    labels: dict[str, AttributeValue]
    attempts: int = 0


generation_scope: ContextVar[Scope | None] = ContextVar("telemetry_generation", default=None)


def count_attempt() -> int | None:
    """Count one more upstream attempt in the generation running now; its number, or None outside a generation."""
    scope = generation_scope.get()
    if scope is None:
        return None
    scope.attempts += 1
    return scope.attempts


def error_type(exc: BaseException) -> str:
    """What ``error.type`` says of ``exc``: its ``code`` when that is a string (the service's errors), else its class name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def labels_of(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    """The metric labels of a step: its own (deployment, family, kind), else those of the generation it runs in."""
    own: dict[str, AttributeValue] = {key: value for key in LABELS if isinstance(value := attributes.get(key), str)}
    scope = generation_scope.get()
    return own or (dict(scope.labels) if scope else {})


def _safely(hook: Callable[..., Mapping[str, object]], *args: Any) -> Mapping[str, object]:
    """A hook's attributes; a broken hook costs telemetry, never the request."""
    try:
        return hook(*args)
    except Exception:
        log.warning("telemetry hook %s failed", getattr(hook, "__name__", hook), exc_info=True)
        return {}


class _Step:
    """One traced call: its span (current while it runs), attributes, error, failure count and duration."""

    def __init__(self, tracer: trace.Tracer, name: str, steps: Steps, arguments: Mapping[str, Any]) -> None:
        self.steps = steps
        self.attributes = dict(_safely(steps.before, arguments)) if steps.before else {}
        self.span = tracer.start_span(name, attributes=allowed(self.attributes))
        self.labels = labels_of(self.attributes)
        self.started = time.monotonic()
        self._scope_token: Token[Scope | None] | None = None

    def __enter__(self) -> _Step:
        self._using = trace.use_span(self.span, end_on_exit=True, record_exception=False, set_status_on_exception=False)
        self._using.__enter__()
        if self.steps.generation:
            self._scope_token = generation_scope.set(Scope(dict(self.labels)))
        return self

    def done(self, result: Any) -> Any:
        if self.steps.after:
            self.span.set_attributes(allowed(_safely(self.steps.after, result)))
        return result

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            error = None if exc is None else self._failed(exc)
            if self.steps.generation:
                labels = self.labels if error is None else {**self.labels, "error.type": error}
                instruments().duration.record(time.monotonic() - self.started, labels)
        finally:
            if self._scope_token is not None:
                generation_scope.reset(self._scope_token)
            self._using.__exit__(kind, exc, tb)

    def _failed(self, exc: BaseException) -> str:
        attributes: dict[str, object] = {"error.type": error_type(exc)}
        if self.steps.error:
            attributes.update(_safely(self.steps.error, exc))
        error = str(attributes["error.type"])
        self.span.set_attributes(allowed(attributes))
        self.span.set_status(Status(StatusCode.ERROR, error))
        if self.steps.failures:
            instruments().failures.add(1, {**self.labels, "error.type": error})
        return error


def traced(name: str, steps: Steps | None = None) -> Callable[[F], F]:
    """Decorate a function or coroutine function: each call is a span named ``name``, with ``steps``' attributes.

    When nothing listens (no provider), the call goes straight through: no span, no hook, no metric.
    """
    steps = steps or Steps()

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                tracer = current_tracer()
                if tracer is None:
                    return await fn(*args, **kwargs)
                with _Step(tracer, name, steps, arguments(args, kwargs)) as step:
                    return step.done(await fn(*args, **kwargs))

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            tracer = current_tracer()
            if tracer is None:
                return fn(*args, **kwargs)
            with _Step(tracer, name, steps, arguments(args, kwargs)) as step:
                return step.done(fn(*args, **kwargs))

        return cast(F, run)

    return decorate
