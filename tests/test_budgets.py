"""Callers' budgets: the setting (every mistake names its entry), the worst case a reservation holds, and the
ledger two instances share through Azurite (no grant beyond a limit, holds that expire, days that renew).

Time is an injected clock (epoch seconds) that tests move; two :class:`Ledger` objects over one
container stand for two instances of the app.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from local.azurite import Azurite
from local.simulator import ImageParams
from local.simulator import _usage as simulator_usage  # what the simulator bills: the worst case must cover it
from shared.callers.ledger import HELD_RETRY_SECONDS, WINDOW, Ledger, seconds_to_midnight
from shared.callers.limits import SETTING, CallerLimits, Limits, LimitsConfigError, parse_limits
from shared.models import parse_request
from shared.pricing import cost, worst_case

DEPLOYMENTS = ("gpt-image-2", "gpt-image-1-mini", "dall-e-3")
NOON = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[]", f"{SETTING} must be a JSON object"),
        ('{"defaults": {}}', "'defaults', which is not 'default' or 'callers'"),
        ('{"default": {"images_per_minute": 0}}', f"{SETTING}.default.images_per_minute must be a whole number"),
        ('{"default": {"images_per_minute": true}}', f"{SETTING}.default.images_per_minute must be a whole number"),
        ('{"callers": {"entra:a": {"usd_per_day": -1}}}', f'{SETTING}.callers["entra:a"].usd_per_day must be a number'),
        ('{"callers": {"entra:a": {"usd_per_day": "5"}}}', f'{SETTING}.callers["entra:a"].usd_per_day must be a number'),
        ('{"callers": {"a": {"deployments": ["gpt-image-9"]}}}', "callers[\"a\"].deployments names 'gpt-image-9', which this app does not serve"),
        ('{"callers": {"a": {"deployments": "gpt-image-2"}}}', 'callers["a"].deployments must be a list of deployment names, or "*"'),
        ('{"callers": {"a": {"rpm": 3}}}', 'callers["a"].rpm is not a limit'),
        ('{"callers": {" a": {}}}', "a caller entry needs a principal"),
        ('{"callers": []}', f"{SETTING}.callers must be a JSON object"),
        ("{", f"{SETTING} must be JSON"),
    ],
)
def test_a_mistake_in_the_limits_names_its_entry(text: str, names: str) -> None:
    with pytest.raises(LimitsConfigError) as refused:
        parse_limits(text, deployments=DEPLOYMENTS)
    assert names in str(refused.value)


def test_an_entry_inherits_what_it_leaves_out_and_the_caller_id_wins_over_the_bare_principal() -> None:
    limits = parse_limits(
        json.dumps(
            {
                "default": {"images_per_minute": 10, "usd_per_day": 5, "deployments": ["gpt-image-2"]},
                "callers": {"p1": {"usd_per_day": 50}, "entra:p1": {"deployments": "*"}, "queue:image-jobs": {"images_per_minute": None}},
            }
        ),
        deployments=DEPLOYMENTS,
    )
    assert limits.of("entra:p1") == Limits(10, 5.0, None)  # its own id: the default's fields but the deployments
    assert limits.of("key:p1") == Limits(10, 50.0, frozenset({"gpt-image-2"}))  # the bare principal, in another mode
    assert limits.of("queue:image-jobs") == Limits(None, 5.0, frozenset({"gpt-image-2"}))  # null lifts a limit
    assert limits.of("entra:someone-else") == limits.default
    assert not parse_limits("", deployments=DEPLOYMENTS).enabled and parse_limits('{"callers": {"a": {}}}', deployments=DEPLOYMENTS).enabled is False


# ---------------------------------------------------------------- the worst case


@pytest.mark.parametrize("deployment", ["gpt-image-2", "gpt-image-1-mini"])
@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "auto", None])
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto", None])
def test_the_worst_case_covers_what_upstream_bills_for_any_size_quality_and_n(deployment: str, size: str | None, quality: str | None) -> None:
    family = deployment
    body = {"prompt": "a lighthouse at dawn, ünïcödé " * 20, "n": 3} | ({"size": size} if size else {}) | ({"quality": quality} if quality else {})
    request = parse_request(body, deployment, family)
    sent = request.upstream_body
    largest = 1536 * 1024 if family == "gpt-image-1-mini" else 8_294_400
    width, height = (int(x) for x in sent["size"].split("x")) if "x" in str(sent.get("size")) else (largest, 1)
    for billed_quality in ("low", "medium", "high") if sent.get("quality") in (None, "auto") else (sent["quality"],):
        params = ImageParams(family, sent["prompt"], 3, str(sent.get("size")), width, height, billed_quality, None, "b64_json", "png", None, "auto")
        billed = cost(family, simulator_usage(params), sent, 3)["usd"]
        assert billed is not None and worst_case(family, sent) >= billed


def test_an_edits_inputs_raise_its_worst_case_and_dall_e_3_costs_exactly_its_price() -> None:
    sent = {"prompt": "make it blue", "n": 1, "size": "1024x1024", "quality": "low"}
    assert worst_case("gpt-image-2", sent, [1024 * 1024, 4096 * 4096]) > worst_case("gpt-image-2", sent, [1024 * 1024]) > worst_case("gpt-image-2", sent)
    hd = {"prompt": "x", "size": "1792x1024", "quality": "hd"}
    assert worst_case("dall-e-3", hd) == cost("dall-e-3", None, hd, 1)["usd"] == 0.12
    assert worst_case("gpt-image-2.5-flare", sent) is None  # no price: nothing to hold a budget against


# ---------------------------------------------------------------- the ledger, two instances


@pytest.fixture()
async def container(azurite: Azurite) -> AsyncIterator[ContainerClient]:
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as blobs:
        yield blobs.get_container_client(f"ledger-{uuid.uuid4().hex[:10]}")


async def test_two_instances_never_grant_more_images_in_a_minute_than_the_limit(container: ContainerClient) -> None:
    clock = Clock()
    ledgers = [Ledger(container, clock=clock), Ledger(container, clock=clock)]
    limits = Limits(images_per_minute=7)
    decisions = await asyncio.gather(*(ledgers[i % 2].reserve("c", limits, 0.0, 1, ttl=300) for i in range(20)))
    granted = [d for d in decisions if d.rid is not None]
    assert len(granted) == 7
    refused = [d for d in decisions if d.rid is None]
    assert {d.refused for d in refused} == {"minute"} and all(0 < d.wait <= WINDOW and not d.final for d in refused)
    clock.now += WINDOW + 0.1  # the minute moves on
    assert (await ledgers[0].reserve("c", limits, 0.0, 7, ttl=300)).rid is not None
    too_many = await ledgers[1].reserve("c", Limits(images_per_minute=7), 0.0, 8, ttl=300)
    assert too_many.refused == "minute" and too_many.final  # more than a minute allows: no wait helps


async def test_the_day_budget_holds_worst_cases_and_settles_what_upstream_billed(container: ContainerClient) -> None:
    clock = Clock()
    first, second = Ledger(container, clock=clock), Ledger(container, clock=clock)
    limits = Limits(usd_per_day=1.0)
    holds = await asyncio.gather(*(ledger.reserve("c", limits, 0.3, 1, ttl=300) for ledger in (first, second, first, second)))
    assert sum(d.rid is not None for d in holds) == 3  # 0.9 held; the fourth would pass 1.0
    held_back = next(d for d in holds if d.rid is None)
    assert held_back.refused == "day" and not held_back.final and held_back.wait == HELD_RETRY_SECONDS  # calls in flight hold it
    granted = [d.rid for d in holds if d.rid is not None]
    day = holds[0].day
    await first.settle("c", day, granted[0], 0.05, 1)  # billed far less than its worst case
    await second.release("c", day, granted[1])  # upstream did nothing
    assert (await second.reserve("c", limits, 0.3, 1, ttl=300)).rid is not None  # 0.05 spent + 0.6 held
    book = await Ledger(container, clock=clock).book("c")  # a third instance reads storage
    assert book.spent == pytest.approx(0.05) and sum(h.usd for h in book.held.values()) == pytest.approx(0.6)
    await first.settle("c", day, granted[2], None, 1)  # no usable usage: charged its worst case
    spent = await first.reserve("c", limits, 0.7, 1, ttl=300)
    assert spent.refused == "day" and spent.final and spent.wait == pytest.approx(seconds_to_midnight(clock.now))  # 0.35 spent + 0.7 > 1


async def test_a_hold_nobody_settles_expires_charged_at_its_worst_case_and_a_new_day_starts_from_nothing(container: ContainerClient) -> None:
    clock = Clock()
    ledger = Ledger(container, clock=clock)
    limits = Limits(images_per_minute=100, usd_per_day=1.0)
    crashed = await ledger.reserve("c", limits, 0.4, 2, ttl=300)  # the instance dies before it settles
    clock.now += 301
    book = await Ledger(container, clock=clock).book("c")
    assert book.held == {} and book.spent == pytest.approx(0.4) and book.images == 2
    await ledger.settle("c", crashed.day, str(crashed.rid), 0.01, 2)  # too late: it expired, and counts as it was charged
    assert (await ledger.book("c")).spent == pytest.approx(0.4)
    assert (await ledger.reserve("c", limits, 0.7, 1, ttl=300)).final
    clock.now += seconds_to_midnight(clock.now) + 1  # a new UTC day
    assert (await ledger.reserve("c", limits, 0.7, 1, ttl=300)).rid is not None
    assert (await ledger.book("c")).spent == 0.0


async def test_the_minute_limit_holds_across_midnight_and_a_hold_settles_on_the_day_it_was_granted(container: ContainerClient) -> None:
    clock = Clock(dt.datetime(2026, 11, 20, 23, 59, 50, tzinfo=dt.UTC).timestamp())
    ledger = Ledger(container, clock=clock)
    limits = Limits(images_per_minute=3, usd_per_day=1.0)
    before = await ledger.reserve("c", limits, 0.5, 3, ttl=300)
    clock.now += 20  # 00:00:10 the next day
    refused = await ledger.reserve("c", limits, 0.1, 1, ttl=300)
    assert refused.refused == "minute" and refused.wait == pytest.approx(WINDOW - 20)  # the calls before midnight still count
    await ledger.settle("c", before.day, str(before.rid), 0.25, 3)
    assert (await ledger.book("c", "2026-11-20")).spent == pytest.approx(0.25) and (await ledger.book("c")).spent == 0.0


async def test_callers_have_books_of_their_own(container: ContainerClient) -> None:
    ledger = Ledger(container, clock=Clock())
    limits = Limits(images_per_minute=1)
    assert (await ledger.reserve("a", limits, 0.0, 1, ttl=60)).rid is not None
    assert (await ledger.reserve("b", limits, 0.0, 1, ttl=60)).rid is not None
    assert (await ledger.reserve("a", limits, 0.0, 1, ttl=60)).rid is None


def test_no_limits_means_nothing_is_reserved() -> None:
    assert not CallerLimits().enabled
