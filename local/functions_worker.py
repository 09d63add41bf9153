"""The Python worker's HTTP side without the Functions host: the app served as Azure serves it.

With the HTTP streams extension the Azure Functions Python worker serves HTTP itself
(azure-functions-python-worker, ``azure_functions_worker/http_v2.py``): it builds the extension's
``WebApp`` (a FastAPI app with one catch-all route), serves it with the extension's uvicorn
``WebServer``, and the host forwards every HTTP request there (path and query unchanged, plus an
``x-ms-invocation-id`` header). For that invocation the worker calls the HTTP function with the FastAPI
``Request``, its route parameters copied in by the extension's ``RequestSynchronizer``, and the catch-all
returns whatever the function returned, which uvicorn sends as it streams.

:func:`worker_app` is that catch-all app with the function called directly instead of through the host:
the same extension classes, the same function body (``shared.api.hosting``), the same server. What it
leaves out is the host's own part: function keys, the pairing of the forwarded request with the
invocation, and the host's timeouts (docs/streaming.md, "Hosting").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from azurefunctions.extensions.http.fastapi import Request, RequestSynchronizer, Response, WebApp
from fastapi import FastAPI

from shared.api import create_app
from shared.api.hosting import HttpFunction, http_function
from shared.runtime import Runtime

ROUTE_PARAMETER = "route"  # function_app.py's trigger route is "{*route}"


def worker_app(function: HttpFunction) -> FastAPI:
    """The worker's web app calling ``function`` for every request, route parameters as the host gives them."""
    web = WebApp()
    synchronizer = RequestSynchronizer()

    @web.route
    async def catch_all(request: Request) -> Response:
        synchronizer.sync_route_params(request, {ROUTE_PARAMETER: request.url.path.lstrip("/")})
        return await function(request)

    return web.get_app()


def hosted(runtime: Runtime) -> FastAPI:
    """The app over ``runtime`` as the worker serves it; stopping the server closes the runtime (in Azure the
    process ends instead)."""
    app = worker_app(http_function(runtime, create_app(runtime, owns_runtime=False)))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await runtime.close()

    app.router.lifespan_context = lifespan
    return app
