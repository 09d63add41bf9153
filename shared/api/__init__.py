"""HTTP routes and error responses: the Azure OpenAI images contract, archived.

One module per concern: ``generation`` (the generation and submission routes),
``edits`` (image edits: multipart or archived names), ``operations`` (background job
status), ``images`` (stable links), ``health``, ``body`` (reading a request body),
``usage`` (a day's usage per caller), ``errors`` (the error shape and handlers), ``schema`` (the OpenAPI request schema,
built from the model rules, and the responses), ``security`` (the schemes the document declares),
``streamed`` (a ``stream: true`` answer), ``timing`` (the request's one deadline), ``hosting`` (how the
Functions worker hands a request to the app) and ``deps`` (what a route needs, read from ``app.state``);
the gallery (``shared.gallery``) is mounted beside them. :func:`create_app` only assembles them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared import gallery, telemetry
from shared.api import edits, generation, health, images, operations, usage
from shared.api.body import read_json_body
from shared.api.errors import EXCEPTION_HANDLERS, error_response
from shared.api.timing import ArrivalStamp
from shared.runtime import Runtime

__all__ = ["create_app", "error_response", "read_json_body"]


def create_app(runtime: Runtime, *, owns_runtime: bool = True) -> FastAPI:
    """The HTTP API over ``runtime``. Its lifespan opens the runtime, and closes it when the app owns it
    (not in Azure, where the queue trigger shares it and the host runs shutdown in another event loop)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.open()
        yield
        if owns_runtime:
            await runtime.close()

    app = FastAPI(
        title="Image generation with archive",
        version="0.1.0",
        description="Azure OpenAI images API in front of your deployments; every image archived to your Blob Storage.",
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        redirect_slashes=False,  # its redirect is built from the Host header; a trailing slash is a 404 instead
        telemetry=telemetry.FASTAPI_TELEMETRY,
    )
    app.state.runtime = runtime
    for router in (generation.router, edits.router, operations.router, images.router, usage.router, health.router, gallery.router):
        app.include_router(router)
    app.add_middleware(ArrivalStamp)  # a synchronous call's deadline counts from its arrival (shared/api/timing.py)
    telemetry.instrument_app(app)
    return app
