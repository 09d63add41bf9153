"""Callers' limits end to end: two app instances (two Runtimes, two apps) over one Azurite enforce one caller's
limits together, a job over its limits is deferred or failed with the reason, and the queue's caller has limits too.

The callers are Entra principals as App Service authentication names them (``X-MS-CLIENT-PRINCIPAL``,
what the platform sets after it validated the caller's token: tests/callers.py). Upstream is the
simulator: its counters say how many calls were sent, the records the service wrote say what they cost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from local.servers import serve_in_thread
from shared.api import create_app
from shared.callers.ledger import HELD_RETRY_SECONDS, Ledger
from shared.index import caller_key
from shared.models import parse_request
from shared.pricing import worst_case
from shared.runtime import Runtime
from shared.settings import Settings
from tests.callers import entra, principal, records_of
from tests.conftest import SimControl

InProcess = Callable[..., Awaitable[httpx.AsyncClient]]
GENERATE = "/openai/deployments/gpt-image-1-mini/images/generations?api-version=2025-04-01-preview"
SUBMIT = "/openai/deployments/gpt-image-1-mini/images/generations:submit?api-version=2025-04-01-preview"
BODY = {"prompt": "a lighthouse at dawn", "size": "1024x1024", "response_format": "url"}  # quality left to the model: held as high


async def two_instances(in_process: InProcess, limits: dict[str, Any], jobs: str = "") -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    """Two apps over one storage (the same jobs container holds the ledger), as two instances of one deployment."""
    env = entra(IMAGES_CALLER_LIMITS=json.dumps(limits), IMAGES_JOBS_CONTAINER=jobs or f"limits-{uuid.uuid4().hex[:10]}")
    return await in_process(**env), await in_process(**env)


async def test_two_instances_grant_one_caller_no_more_images_a_minute_than_its_limit(in_process: InProcess, sim: SimControl) -> None:
    first, second = await two_instances(in_process, {"default": {"images_per_minute": 3}})
    alice, bob = principal("alice"), principal("bob")
    answers = await asyncio.gather(*((first, second)[i % 2].post(GENERATE, json=BODY, headers=alice) for i in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 5
    assert sim.stats()["generations"] == 3  # what upstream was asked: the grants, no more
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "RateLimited" and int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["x-ratelimit-limit-images"] == "3" and refused.headers["x-ratelimit-remaining-images"] == "0"
        assert "x-should-retry" not in refused.headers  # a minute's wait cures it
    granted = [a for a in answers if a.status_code == 200]
    assert sorted(a.headers["x-ratelimit-remaining-images"] for a in granted) == ["0", "1", "2"]
    assert (await second.post(GENERATE, json=BODY, headers=bob)).status_code == 200  # another caller has a minute of its own
    too_many = await first.post(GENERATE, json={**BODY, "n": 4}, headers=bob)
    assert too_many.status_code == 429 and too_many.headers["x-should-retry"] == "false" and too_many.json()["error"]["param"] == "n"


async def test_two_instances_hold_the_day_budget_for_calls_in_flight_and_settle_at_what_upstream_billed(
    in_process: InProcess, sim: SimControl, azurite: Azurite
) -> None:
    worst = worst_case("gpt-image-1-mini", parse_request(BODY, "gpt-image-1-mini", "gpt-image-1-mini").upstream_body)
    assert worst is not None
    budget = round(3.5 * worst, 6)
    jobs = f"limits-{uuid.uuid4().hex[:10]}"
    first, second = await two_instances(in_process, {"callers": {"alice": {"usd_per_day": budget}}}, jobs)
    alice = principal("alice")
    sim.configure(latency=60)  # every call stays in flight until released
    sent = [asyncio.ensure_future((first, second)[i % 2].post(GENERATE, json=BODY, headers=alice)) for i in range(6)]
    await asyncio.to_thread(sim.wait, {"in_flight": 3})  # three granted, upstream
    refused: list[httpx.Response] = []
    pending: set[asyncio.Future[httpx.Response]] = set(sent)
    while len(refused) < 3:  # the others are refused at once: the granted cannot answer before they are released
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        refused += [t.result() for t in done]
    assert len(refused) == 3 and sim.stats()["in_flight"] == 3
    for answer in refused:  # the budget is held by calls in flight: worth coming back soon
        assert answer.status_code == 429 and answer.json()["error"]["code"] == "BudgetExceeded"
        assert answer.headers["Retry-After"] == str(int(HELD_RETRY_SECONDS)) and "x-should-retry" not in answer.headers
        assert float(answer.headers["x-ratelimit-remaining-usd"]) < worst
    sim.release()
    granted = [await t for t in pending]
    assert [g.status_code for g in granted] == [200] * 3 and sim.stats()["generations"] == 3

    # Settled at what upstream billed (medium, not the high held): room for more, until the day's budget is spent.
    sim.configure(latency=0)
    while (answer := await second.post(GENERATE, json=BODY, headers=alice)).status_code == 200:
        granted.append(answer)
    assert answer.json()["error"]["code"] == "BudgetExceeded" and answer.headers["x-should-retry"] == "false"
    spent = sum(record["cost"]["usd"] for record in records_of(azurite, granted))
    assert len(granted) > 3 and sim.stats()["generations"] == len(granted)  # every grant went upstream once, nothing else did
    assert spent <= budget < spent + worst  # never over the budget, and refused only when the worst case would pass it
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:  # a third instance reads the ledger
        book = await Ledger(blobs.get_container_client(jobs)).book(caller_key("entra:alice"))
    assert book.spent == pytest.approx(spent) and book.held == {} and book.images == len(granted)


async def test_a_deployment_the_caller_may_not_use_is_a_403_naming_it_before_anything_is_read(in_process: InProcess, sim: SimControl) -> None:
    client, _ = await two_instances(in_process, {"default": {"deployments": ["gpt-image-2"]}})
    for path in (GENERATE, SUBMIT):
        answer = await client.post(path, json=BODY, headers=principal("carol"))
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "DeploymentNotAllowed"
        assert "'gpt-image-1-mini'" in answer.json()["error"]["message"]
    assert sim.stats()["generations"] == 0


async def run_next(runtime: Runtime, azurite: Azurite) -> Any:
    """Take the next message of the runtime's queue and run it as the host would (consumed unless it raised)."""
    queue = QueueClient.from_connection_string(azurite.connection_string, runtime.settings.queue_name)
    message = queue.receive_message()
    assert message is not None
    outcome = await runtime.jobs.handle(message.content, message.id, message.dequeue_count or 1)
    queue.delete_message(message)
    return outcome


async def test_a_job_over_its_minute_limit_is_deferred_and_over_its_day_budget_fails_with_the_reason(
    in_process: InProcess, make_settings: Callable[..., Settings], sim: SimControl, azurite: Azurite
) -> None:
    queue = f"limits-{uuid.uuid4().hex[:10]}"
    limits = {"callers": {"dave": {"images_per_minute": 1}, "erin": {"usd_per_day": 0}}}
    env = entra(IMAGES_QUEUE=queue, IMAGES_JOBS_CONTAINER=f"limits-{uuid.uuid4().hex[:10]}", IMAGES_CALLER_LIMITS=json.dumps(limits))
    client = await in_process(**env)
    async with Runtime(make_settings(**env)) as worker:
        for who in ("dave", "dave", "erin"):
            assert (await client.post(SUBMIT, json=BODY, headers=principal(who))).status_code == 202
        outcomes = [await run_next(worker, azurite) for _ in range(3)]
    assert [o.action for o in outcomes] == ["succeeded", "deferred", "failed"]
    assert "retry after" in outcomes[1].detail and sim.stats()["generations"] == 1
    failed = (await client.get(f"/openai/operations/images/{outcomes[2].job_id}", headers=principal("erin"))).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "BudgetExceeded" and "0.00 USD a day" in failed["error"]["message"]
    later = QueueClient.from_connection_string(azurite.connection_string, queue).peek_messages()
    assert later == []  # the continuation is invisible until the minute has room (its Retry-After)


async def test_the_queue_s_caller_has_limits_of_its_own(make_settings: Callable[..., Settings], sim: SimControl, azurite: Azurite) -> None:
    queue = f"limits-{uuid.uuid4().hex[:10]}"
    limits = {"callers": {f"queue:{queue}": {"deployments": ["gpt-image-2"]}}}
    env = entra(IMAGES_QUEUE=queue, IMAGES_JOBS_CONTAINER=f"limits-{uuid.uuid4().hex[:10]}", IMAGES_CALLER_LIMITS=json.dumps(limits))
    async with Runtime(make_settings(**env)) as worker:
        dropped = QueueClient.from_connection_string(azurite.connection_string, queue)
        dropped.create_queue()
        dropped.send_message(json.dumps({"deployment": "gpt-image-1-mini", **BODY}))  # a message names nobody: the queue's caller
        outcome = await run_next(worker, azurite)
    assert outcome.action == "failed" and "may not use the deployment 'gpt-image-1-mini'" in outcome.detail
    assert sim.stats()["generations"] == 0


def test_the_openai_sdk_never_repeats_a_call_over_a_spent_budget(make_settings: Callable[..., Settings], sim: SimControl) -> None:
    """The SDK retries a 429 after its Retry-After unless the answer says x-should-retry: false, as a spent day says."""
    limits = {"callers": {"key:function-key": {"usd_per_day": 0}}}
    server = serve_in_thread(create_app(Runtime(make_settings(IMAGES_CALLER_LIMITS=json.dumps(limits), IMAGES_JOBS_CONTAINER=f"limits-{uuid.uuid4().hex[:10]}"))))
    sent: list[str] = []
    try:
        with httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]}) as http:
            client = openai.AzureOpenAI(azure_endpoint=server.url, api_key="unused-locally", api_version="2025-04-01-preview", max_retries=2, http_client=http)
            with pytest.raises(openai.RateLimitError) as refused:
                client.images.generate(model="gpt-image-1-mini", prompt="a lighthouse", size="1024x1024")
    finally:
        server.stop()
    assert refused.value.code == "BudgetExceeded" and len(sent) == 1  # not asked again: waiting would not help
    assert sim.stats()["generations"] == 0
