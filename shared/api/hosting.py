"""How the HTTP app is hosted: every request the Functions host hands over is answered by the FastAPI app.

In Azure the app is served through the HTTP streams extension (``azurefunctions-extensions-http-fastapi``):
the Python worker runs a web server of its own (uvicorn, with the extension's FastAPI app and one catch-all
route), the host forwards each HTTP request to it, and the function is called with that request as a
FastAPI ``Request``. Whatever ``Response`` the function returns is what the worker's server sends, streamed
as the response itself streams (a ``StreamingResponse`` goes out chunk by chunk, never buffered).

So one function serves the whole API: it returns an :class:`AppResponse`, a response whose body is the
FastAPI app of :func:`shared.api.create_app` answering the very request (its ASGI scope, its body still
unread, its send channel). Routing, validation, errors, the OpenAPI document and the request spans are the
app's own, exactly as under any ASGI server; nothing is copied or buffered on the way.

This module knows FastAPI and Starlette only, no Azure Functions type: ``function_app.py`` wires it to the
trigger, and the local stack (``local/functions_worker.py``) serves it the way the worker does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.runtime import Runtime

# The keys of an HTTP connection scope in the ASGI specification. What a server or an enclosing app adds
# besides (the worker's route, endpoint and path parameters, its app and lifespan state) stays out, so the
# app routes the request as if it were the only app on the server.
_HTTP_SCOPE_KEYS = frozenset(
    {"type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string", "root_path", "headers", "client", "server", "extensions"}
)

HttpFunction = Callable[[Request], Awaitable[Response]]


def connection_scope(scope: Scope) -> Scope:
    """The ASGI specification's part of ``scope``: the request as the server received it, nothing an app added."""
    return {key: value for key, value in scope.items() if key in _HTTP_SCOPE_KEYS}


class AppResponse(Response):
    """A response that an ASGI app gives: sending it runs ``app`` on the request it answers.

    The worker sends a returned response by calling it with the request's scope, receive and send, as
    Starlette sends any response; here that call is the app's, so the app reads the body and streams its
    answer itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(connection_scope(scope), receive, send)


def http_function(runtime: Runtime, app: FastAPI) -> HttpFunction:
    """The body of the one HTTP function: open ``runtime`` (once; the queue trigger may have opened it
    first) and let ``app`` answer the request.

    The app's lifespan does not run under the worker (its server runs the extension's app, not this one),
    so the runtime is opened here, as the queue trigger opens it; it is never closed in Azure (the
    instance ends with the process).
    """

    async def answer(request: Request) -> Response:
        await runtime.open()
        return AppResponse(app)

    return answer
