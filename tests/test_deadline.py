"""One deadline per call: where it starts (a request's arrival, a delivery's start) and what bounds it (the front end's
230 s, host.json's functionTimeout). What it covers (booked waits, every failover attempt, reads) is tested where
those happen: tests/test_pool.py, tests/test_upstream_retry.py, tests/test_hardening_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from shared.api.timing import ARRIVED, ArrivalStamp, request_deadline
from shared.deadline import Deadline
from shared.host import HOST_JSON, host_function_timeout
from shared.jobs.handler import ARCHIVE_SECONDS, job_deadline
from shared.settings import Settings

ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-2",
    "AZURE_OPENAI_API_KEY": "deadline-test-key-0123456789",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_is_what_is_left_of_its_time_from_when_it_started() -> None:
    clock = Clock()
    deadline = Deadline(10, clock=clock, started=45.0)  # the caller's time began 5 s ago
    assert deadline.remaining() == 5 and not deadline.passed
    clock.now += 5
    assert deadline.remaining() == 0 and deadline.passed
    clock.now += 5
    assert deadline.remaining() == 0  # never negative


@pytest.mark.parametrize(("upstream", "expected"), [("30", 30.0), ("600", 600.0 - ARCHIVE_SECONDS), ("3600", 600.0 - ARCHIVE_SECONDS)])
def test_a_job_s_deadline_ends_before_host_json_s_function_timeout_leaving_time_to_archive(upstream: str, expected: float) -> None:
    assert host_function_timeout() == 600  # host.json as deployed: "00:10:00"
    settings = Settings.from_env({**ENV, "IMAGES_UPSTREAM_TIMEOUT_SECONDS": upstream})
    assert job_deadline(settings, clock=Clock()).total == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("00:10:00", 600.0), ("00:05:30.5", 330.5), ("1.02:00:00", 93600.0), ("-1", None), (None, 300.0)],
)
def test_function_timeout_is_read_as_the_host_reads_a_timespan(tmp_path: Path, value: str | None, seconds: float | None) -> None:
    host = json.loads(HOST_JSON.read_text())
    host.pop("functionTimeout")
    if value is not None:
        host["functionTimeout"] = value
    path = tmp_path / "host.json"
    path.write_text(json.dumps(host))
    assert host_function_timeout(path) == seconds


async def test_a_synchronous_call_s_deadline_counts_from_the_request_s_arrival_not_from_its_route() -> None:
    settings = Settings.from_env({**ENV, "IMAGES_SYNC_TIMEOUT_SECONDS": "200"})
    app = FastAPI()
    app.add_middleware(ArrivalStamp)
    seen: dict[str, float] = {}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, float]:
        await request.body()  # the upload: it takes from the same deadline
        deadline = request_deadline(request, settings)
        seen["arrived"], seen["at"] = getattr(request.state, ARRIVED), deadline.at
        return {"left": deadline.remaining()}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        answer = await client.post("/upload", content=b"x" * 100_000)
    assert answer.status_code == 200 and 0 < answer.json()["left"] <= 200
    assert seen["at"] == seen["arrived"] + 200

