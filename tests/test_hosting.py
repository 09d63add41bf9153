"""The HTTP app as the Functions worker serves it with the HTTP streams extension (shared/api/hosting.py):
the extension's catch-all app hands the request over, the FastAPI app answers it, streams unbuffered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from local.functions_worker import worker_app
from local.servers import ServerThread, serve_in_thread
from shared.api.hosting import AppResponse, connection_scope


def inner_app(release: threading.Event) -> FastAPI:
    """An app with a streamed route that sends its second chunk only once the test has read the first."""
    app = FastAPI()

    @app.get("/echo/{name}")
    async def echo(name: str, request: Request) -> dict[str, object]:
        return {"name": name, "query": dict(request.query_params), "path_params": request.path_params, "keys": sorted(request.scope)}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.to_thread(release.wait, 30)  # the test reads the first event before this one is written
            yield b"data: second\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture()
def release() -> threading.Event:
    return threading.Event()


@pytest.fixture()
def served(release: threading.Event) -> Iterator[ServerThread]:
    app = inner_app(release)

    async def function(_: Request) -> Response:
        return AppResponse(app)

    server = serve_in_thread(worker_app(function))  # uvicorn, as the worker's WebServer runs it
    yield server
    release.set()
    server.stop()


def test_a_streamed_response_goes_out_event_by_event_through_the_worker_app(served: ServerThread, release: threading.Event) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client, client.stream("GET", "/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "data: first"  # arrived while the app still holds the second event
        release.set()
        assert [line for line in lines if line] == ["data: second"]


def test_the_app_routes_the_request_as_sent_with_no_trace_of_the_worker_route(served: ServerThread) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        answer = client.get("/echo/x%20y", params={"api-version": "2025-04-01-preview"}).json()
        assert client.post("/upload", content=b"z" * 300_000).json() == {"bytes": 300_000}  # the body is the app's to read
        assert client.get("/nowhere").status_code == 404  # the app's own 404, not the catch-all's
    assert answer["name"] == "x y"
    assert answer["query"] == {"api-version": "2025-04-01-preview"}
    assert answer["path_params"] == {"name": "x y"}  # not the worker's {"path": ...} or the host's {"route": ...}
    assert "endpoint" in answer["keys"] and "state" not in answer["keys"]


def test_connection_scope_keeps_the_asgi_specification_keys_only() -> None:
    scope = {"type": "http", "method": "GET", "path": "/a", "headers": [], "route": object(), "path_params": {"path": "a"}, "app": object(), "state": {}}
    assert connection_scope(scope) == {"type": "http", "method": "GET", "path": "/a", "headers": []}
