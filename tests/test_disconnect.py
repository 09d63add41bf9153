"""A caller that goes away in the middle of its body is logged as what it is, never as an unhandled error.

Over real uvicorn (the transport is what is tested): a raw socket sends the headers and part of
the body, then closes. The test waits for the server's own log line, never for time.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from local.servers import ServerThread, serve_in_thread
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

ROUTES = [
    ("/openai/deployments/gpt-image-1/images/generations?api-version=2025-04-01-preview", "application/json", b'{"prompt": "a half'),
    ("/openai/v1/images/generations", "application/json", b'{"prompt": "a half'),
    ("/openai/deployments/gpt-image-1/images/edits?api-version=2025-04-01-preview", "multipart/form-data; boundary=b",
     b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG'),
    ("/openai/v1/images/edits:submit", "multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhal'),
]  # fmt: skip


class Records(logging.Handler):
    """Every record at INFO and above, and an event per record that says the client went away."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.disconnects = threading.Semaphore(0)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "disconnected before its request body was read" in record.getMessage():
            self.disconnects.release()


@pytest.fixture()
def api_with_logs(make_settings: Callable[..., Settings], sim: SimControl) -> Iterator[tuple[ServerThread, Records]]:
    records = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.INFO)
    server = serve_in_thread(create_app(Runtime(make_settings(IMAGES_QUEUE=f"disc-{uuid.uuid4().hex[:12]}"))))
    try:
        yield server, records
    finally:
        server.stop()
        root.removeHandler(records)
        root.setLevel(level)


@pytest.mark.parametrize(("path", "content_type", "part"), ROUTES, ids=[r[0].split("?")[0] for r in ROUTES])
def test_a_body_cut_short_by_the_client_is_an_info_line_not_an_error(
    api_with_logs: tuple[ServerThread, Records], sim: SimControl, path: str, content_type: str, part: bytes
) -> None:
    server, records = api_with_logs
    where = urlsplit(server.url)
    head = f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection((where.hostname, where.port)) as conn:
        conn.sendall(head.encode() + part)
    assert records.disconnects.acquire(timeout=30), [r.getMessage() for r in records.records]
    said = [r for r in records.records if "disconnected" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO] and said[0].exc_info is None
    errors = [f"{r.name}: {r.getMessage()}" for r in records.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert sim.stats()["requests"] == 0
