"""The HTTP request span, and the official instrumentations put on this app's clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode

from shared.telemetry.core import allowed, current_meter_provider, current_tracer, listening_tracer_provider

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from fastapi.telemetry import TelemetryConfig
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# FastAPI's own OpenTelemetry (FastAPI(telemetry=...)), tracing and logs off: its request span would be a second
# server span under the host's, with the query string (in Azure ?code= holds the function key), and its logs
# carry exception messages past the log redaction. Its HTTP metrics (method, route, status) stay on.
FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "logs": False}


class RequestSpans:
    """ASGI middleware: a span per HTTP request with its method, route template and status (never its query)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = current_tracer()
        if tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        # INTERNAL: in Azure the host's span is the request, and this one sits under it.
        with tracer.start_as_current_span(method, kind=SpanKind.INTERNAL, record_exception=False, set_status_on_exception=False) as span:

            async def send_noting_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, str(status)))
                await send(message)

            try:
                await self.app(scope, receive, send_noting_status)
            finally:
                route = getattr(scope.get("route"), "path", None)  # FastAPI leaves the matched route in the scope
                span.set_attributes(allowed({"http.request.method": method, "http.route": route}))
                if route:
                    span.update_name(f"{method} {route}")


def instrument_app(app: FastAPI) -> None:
    """Put :class:`RequestSpans` on ``app``, and take opentelemetry-instrumentation-fastapi off it: the Azure
    Monitor distro puts that on every FastAPI app, and, like FastAPI's own, it would report the request a second
    time, query string included."""
    app.add_middleware(RequestSpans)
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.uninstrument_app(app)


def instrument_httpx(client: httpx.AsyncClient) -> None:
    """Spans and metrics for ``client``'s requests (the upstream pool) with the official httpx instrumentation,
    unless nothing listens or httpx is instrumented process-wide already (the distro does that in Azure)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    tracer_provider = listening_tracer_provider()
    if tracer_provider is None or HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        return
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider, meter_provider=current_meter_provider())
