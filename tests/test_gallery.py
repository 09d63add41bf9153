"""The gallery over real HTTP against Azurite, with what the service itself archived, in a real browser.

One stack for the module: the API (with the gallery router) over uvicorn, a queue
runner for the jobs, and a day of generations, jobs in every state, and an older day
made by the service under that day's prefix (two generations, and a masked edit of the first).
Every record a page reads is one the service wrote, never a shape written here. Browser tests drive
Debian's chromium through Playwright and are skipped, saying why, only when it is absent.

``GALLERY_SCREENSHOT=docs/gallery.png`` makes the screenshot test write the README's picture.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

import shared.gallery
from client import BatchRequest, JobError, submit, wait
from local.azurite import ROOT, Azurite
from local.queue_runner import QueueRunner
from local.servers import ServerThread, serve_in_thread
from shared import edits
from shared.api import create_app
from shared.callers import key_caller
from shared.deadline import Deadline
from shared.inputs import InputStore, input_name
from shared.jobs import handle_queue_message
from shared.models import parse_request
from shared.models.image_bytes import sniff
from shared.runtime import Runtime
from shared.settings import Settings
from tests.browser import CHROMIUM_ARGS, INSTALL_HINT, chromium_path
from tests.conftest import SimControl, base_env

# The gallery end to end, a real browser included (about 14 s): CI runs it (`.ci/run`: `dev.py test -m slow`).
pytestmark = pytest.mark.slow

API = "/openai/deployments/{}/images/generations?api-version=2025-04-01-preview"
PAST = "2025-12-31"  # an older day, written through the archive
MARKUP = '<script>alert("gallery")</script> & <b>bold</b> "quoted"'
SYNC = [  # (deployment, prompt, extra parameters), in the order they are generated
    ("gpt-image-1-mini", "A lighthouse at dawn, watercolor", {}),
    ("gpt-image-2", "Product shot of a ceramic mug on linen", {"size": "1536x1024"}),
    ("gpt-image-1-mini", MARKUP, {}),
    ("dall-e-3", "Isometric city block at night, neon signs", {"size": "1024x1792"}),
    ("gpt-image-1", "Two paper cranes, studio light", {"n": 2, "size": "1024x1536"}),
    ("gpt-image-1.5", "A red bicycle against a yellow wall", {"output_format": "jpeg"}),
    ("gpt-image-1-mini", "Macro photo of frost on a leaf", {"size": "1536x1024"}),
]


def api_app(runtime: Runtime) -> FastAPI:
    """The API (the gallery is one of its routers)."""
    return create_app(runtime)


@dataclass
class Seeded:
    """What the module's stack archived, and the storage calls the gallery made."""

    url: str
    settings: Settings
    day: str
    sync_ids: list[str]  # oldest first
    jobs: dict[str, str]  # status -> job id
    past_ids: list[str]
    edit_id: str
    mask_name: str
    storage_calls: list[tuple[str, str]] = field(default_factory=list)


def _start_runner(settings: Settings, azurite: Azurite) -> QueueRunner:
    worker = Runtime(settings)

    async def handler(msg: Any) -> Any:
        await worker.open()
        return await handle_queue_message(worker.jobs, msg)

    host_queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    return QueueRunner(
        azurite.connection_string, settings.queue_name, handler, host_queues=host_queues,
        retry_delay=0.2, lease_seconds=5, max_poll_interval=0.2, on_stop=worker.close,
    ).start_in_thread()


async def _jobs(url: str, settings: Settings, azurite: Azurite) -> dict[str, str]:
    """A succeeded job, a filtered (failed) one, and one left queued once the runner has stopped (status -> the service's job id)."""
    keys = {status: f"gallery-{status}-{uuid.uuid4().hex[:6]}" for status in ("succeeded", "failed", "notRunning")}
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        runner = _start_runner(settings, azurite)
        try:
            ids["succeeded"] = (await submit(http, BatchRequest(1, keys["succeeded"], "gpt-image-1-mini", {"prompt": "A lighthouse, as a background job", "size": "1024x1536"}))).id
            ids["failed"] = (await submit(http, BatchRequest(2, keys["failed"], "gpt-image-1-mini", {"prompt": "flagged [[filter:prompt]]"}))).id
            await wait(http, ids["succeeded"], poll_interval=0.05)
            with pytest.raises(JobError):
                await wait(http, ids["failed"], poll_interval=0.05)
        finally:
            await asyncio.to_thread(runner.stop)
        ids["notRunning"] = (await submit(http, BatchRequest(3, keys["notRunning"], "dall-e-3", {"prompt": "Waiting in the queue"}))).id
    return ids


def _mask(size: int, hole: int) -> bytes:
    """A PNG mask, opaque but for a transparent square in the top left corner (where the edit paints)."""
    mask = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, hole, hole))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


async def _past_day(settings: Settings) -> tuple[list[str], str, str]:
    """Two generations and a masked edit of the first on an older day, made by the service itself (the simulator
    upstream, Azurite below) under that day's prefix: the records are the ones the service writes.

    Returns the generations' ids, the edit's id and the mask's archived name."""
    async with Runtime(settings) as runtime:
        service = runtime.service
        made = []
        for prompt in ("A quiet harbour in winter", "Snow on a red roof"):
            request = parse_request({"prompt": prompt, "size": "1024x1024"}, "gpt-image-1", "gpt-image-1")
            made.append(await service.generate(request, generation_id=uuid.uuid4().hex, prefix=PAST, deadline=Deadline(30), budget=5, caller=key_caller()))
        mask = _mask(1024, 256)
        facts = sniff(mask)
        assert facts is not None
        mask_name, digest = input_name(await service.scope.key(), key_caller(), mask, facts)
        await InputStore(service.archive).put(mask_name, mask, "image/png", digest=digest, owner=key_caller())
        body = {"prompt": "The harbour, at night", "image": [made[0].images[0].name], "mask": mask_name, "size": "1024x1024"}
        edit = await edits.run_edit(service, edits.edit_from_json(body, "gpt-image-1", "gpt-image-1"), generation_id=uuid.uuid4().hex,
                                    prefix=PAST, deadline=Deadline(30), budget=5, caller=key_caller())  # fmt: skip
    return [g.id for g in made], edit.id, mask_name


@pytest.fixture(scope="module")
def seeded(azurite: Azurite, simulator: ServerThread) -> Iterator[Seeded]:
    SimControl(simulator.url).reset()
    suffix = uuid.uuid4().hex[:10]
    settings = Settings.from_env(base_env(azurite, simulator.url) | {
        "IMAGES_QUEUE": f"gallery-{suffix}", "IMAGES_CONTAINER": f"gallery-{suffix}", "IMAGES_JOBS_CONTAINER": f"gallery-jobs-{suffix}",
    })
    calls: list[tuple[str, str]] = []
    runtime = Runtime(settings, storage_options={"raw_request_hook": lambda r: calls.append((r.http_request.method, r.http_request.url))})
    app = api_app(runtime)
    server = serve_in_thread(app)
    try:
        jobs = asyncio.run(_jobs(server.url, settings, azurite))
        sync_ids, day = [], ""
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for deployment, prompt, extra in SYNC:
                answer = http.post(API.format(deployment), json={"prompt": prompt, **extra})
                assert answer.status_code == 200, answer.text
                sync_ids.append(answer.headers["x-request-id"])
                day = urlsplit(answer.json()["data"][0]["url"]).path.split("/")[-3]
        past_ids, edit_id, mask_name = asyncio.run(_past_day(settings))
        app.dependency_overrides[shared.gallery.today] = lambda: day  # "today" is the day the generations above were filed under
        calls.clear()
        yield Seeded(server.url, settings, day, sync_ids, jobs, past_ids, edit_id, mask_name, calls)
    finally:
        server.stop()


@pytest.fixture()
def http(seeded: Seeded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=seeded.url, timeout=30) as client:
        yield client


def tile_ids(html: str) -> list[str]:
    return re.findall(r'class="tile" href="[^"]*" data-id="([^"]+)"', html)


def tile_times(html: str) -> list[str]:
    return re.findall(r'<time datetime="([^"]+)"', html)


def next_page(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">Older', html)
    return unescape(found.group(1)) if found else None


# --------------------------------------------------------------------------- server side


def test_a_day_shows_every_generation_and_job_newest_first(seeded: Seeded, http: httpx.Client) -> None:
    """Newest first by when each was asked for: a job by its acceptance, a generation by its request (the index's order)."""
    page = http.get("/gallery")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    ids = tile_ids(page.text)
    jobs = seeded.jobs
    assert ids == [*seeded.sync_ids[::-1], jobs["notRunning"], jobs["failed"], jobs["succeeded"]]
    assert len(tile_times(page.text)) == len(ids)
    assert "Waiting in the queue" in page.text and ">queued<" in page.text
    assert "Your task failed as a result of our safety system." in page.text  # the failed job says why
    assert 'alt="Two paper cranes, studio light"' in page.text and "2 images" in page.text
    # Generations carry their cost now (shared/pricing.py): a tile shows it where it showed the tokens.
    assert "1536x1024" in page.text and "gpt-image-2" in page.text and re.search(r"\$0\.\d{4}", page.text)


def test_a_prompt_with_markup_renders_as_text(seeded: Seeded, http: httpx.Client) -> None:
    escaped = "&lt;script&gt;alert(&#34;gallery&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt; &#34;quoted&#34;"
    index = http.get("/gallery").text
    detail = http.get(f"/gallery/{seeded.day}/{seeded.sync_ids[2]}").text
    for html in (index, detail):
        assert "<script" not in html and "<b>" not in html
        assert escaped in html
    assert f'alt="{escaped}"' in index
    assert detail.count(escaped) == 2  # the prompt and the image's alt text
    assert "&lt;script&gt;alert(\\&#34;gallery\\&#34;)&lt;/script&gt;" in detail  # and the record, as JSON


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("day=2026-02-30", "day"),
        ("day=yesterday", "day"),
        ("status=done", "status"),
        ("deployment=a%20b", "deployment"),
        ("per_page=0", "per_page"),
        ("per_page=61", "per_page"),
        ("per_page=%C2%B2", "per_page"),  # "²" is a digit to str.isdigit, not to int()
        ("continuation=not-a-token", "continuation"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(http: httpx.Client, query: str, param: str) -> None:
    answer = http.get(f"/gallery?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_unknown_pages_are_404(seeded: Seeded, http: httpx.Client) -> None:
    for path in (f"/gallery/{seeded.day}/{uuid.uuid4().hex}", "/gallery/not-a-day/abc", f"/gallery/jobs/{uuid.uuid4().hex}", f"/gallery/{seeded.day}/..%2F..%2Fx"):
        answer = http.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "NotFound"


def test_filters_by_deployment_and_status(seeded: Seeded, http: httpx.Client) -> None:
    def ids(query: str) -> list[str]:
        answer = http.get(f"/gallery?{query}")
        assert answer.status_code == 200
        return tile_ids(answer.text)

    mini = [*(seeded.sync_ids[i] for i in (6, 2, 0)), seeded.jobs["succeeded"]]  # the jobs came before the generations
    assert ids("deployment=gpt-image-1-mini&status=succeeded") == mini
    assert ids("deployment=dall-e-3") == [seeded.sync_ids[3], seeded.jobs["notRunning"]]
    assert ids("status=failed") == [seeded.jobs["failed"]]
    assert ids("status=notRunning") == [seeded.jobs["notRunning"]]
    assert ids("status=running") == []
    assert ids("deployment=gpt-image-1-mini&status=failed") == [seeded.jobs["failed"]]


def test_pages_follow_each_other_without_gaps_or_repeats(seeded: Seeded, http: httpx.Client) -> None:
    pages: list[list[str]] = []
    url: str | None = "/gallery?per_page=3"
    while url:
        html = http.get(url).text
        pages.append(tile_ids(html))
        url = next_page(html)
    assert len(pages) >= 2 and all(len(page) >= 3 for page in pages[:-1]) and pages[-1]
    assert [i for page in pages for i in page] == tile_ids(http.get("/gallery").text)  # the same order as one long page
    filtered: list[str] = []
    url = "/gallery?per_page=2&status=succeeded"
    while url:
        html = http.get(url).text
        filtered += tile_ids(html)
        url = next_page(html)
    assert sorted(filtered) == sorted([*seeded.sync_ids, seeded.jobs["succeeded"]])


def test_links_carry_the_code_and_the_page_holds_no_key_or_signature(seeded: Seeded, http: httpx.Client) -> None:
    for path in ("/gallery?per_page=3&code=fn-key-1", f"/gallery/{seeded.day}/{seeded.sync_ids[4]}?code=fn-key-1"):
        answer = http.get(path)
        urls = [unescape(u) for u in re.findall(r'(?:href|src|action)="([^"]+)"', answer.text)]
        app_urls = [u for u in urls if not u.startswith(("data:", "#"))]
        assert app_urls and all(u.startswith("/") for u in app_urls)  # relative: the page works behind any host name
        assert all(parse_qs(urlsplit(u).query).get("code") == ["fn-key-1"] for u in app_urls if u != "/gallery"), app_urls
        assert "sig=" not in answer.text and "AccountKey" not in answer.text
        assert answer.headers["referrer-policy"] == "no-referrer"  # the page URL holds the key: never sent on
        assert answer.headers["cache-control"] == "no-store"
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
    assert '<input type="hidden" name="code" value="fn-key-1">' in http.get("/gallery?code=fn-key-1").text  # the filter form keeps it
    hostile = http.get("/gallery", params={"code": '"><script>x</script>'}).text
    assert "<script>x" not in hostile and 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in hostile


def test_a_day_is_read_from_its_own_index_prefix_only(seeded: Seeded, http: httpx.Client) -> None:
    """The key holder is an operator: one listing, of the day of every caller (_index/~all/<day>/); the days are one read (_days/~all)."""
    seeded.storage_calls.clear()
    assert http.get(f"/gallery?day={PAST}").status_code == 200
    listings = [(urlsplit(url).path, parse_qs(urlsplit(url).query)) for _, url in seeded.storage_calls if "comp=list" in url]
    assert listings, seeded.storage_calls
    for path, query in listings:  # never a listing of the images, nor of every job
        assert path.endswith(f"/{seeded.settings.jobs_container}"), path
        assert query.get("prefix") == [f"_index/~all/{PAST}/"] and "delimiter" not in query, query
    reads = [url for method, url in seeded.storage_calls if method == "GET" and url.endswith("/record.json")]
    assert len(reads) == 3  # only the records the page shows


def test_a_busy_day_reads_only_what_a_page_shows(seeded: Seeded, http: httpx.Client) -> None:
    day = "2025-06-01"
    asyncio.run(_busy_day(seeded.settings, day, 150))
    seeded.storage_calls.clear()
    first = http.get(f"/gallery?day={day}&per_page=10").text
    shown = tile_ids(first)
    reads = [url for method, url in seeded.storage_calls if method == "GET" and url.endswith("/record.json")]
    assert len(shown) == 10 and len(reads) == len(shown)  # a page
    listed = [url for method, url in seeded.storage_calls if "comp=list" in url]
    assert all(f"prefix=_index%2F~all%2F{day}%2F" in url and "maxresults=10" in url for url in listed), listed
    for per_page in (10, 60):  # whatever the page size, the pages hold every generation once
        everything: list[str] = []
        url: str | None = f"/gallery?day={day}&per_page={per_page}"
        while url:
            html = http.get(url).text
            everything += tile_ids(html)
            url = next_page(html)
        assert len(everything) == len(set(everything)) == 150


async def _busy_day(settings: Settings, day: str, count: int) -> None:
    """``count`` small generations filed under ``day``, made by the service (the simulator, Azurite), a few at a time."""
    async with Runtime(settings) as runtime:

        async def one(index: int) -> None:
            body = {"prompt": f"item {index}", "quality": "low", "output_format": "jpeg", "output_compression": 100}
            request = parse_request(body, "gpt-image-1-mini", "gpt-image-1-mini")
            await runtime.service.generate(request, generation_id=uuid.uuid4().hex, prefix=day, deadline=Deadline(30), budget=5, caller=key_caller())

        for start in range(0, count, 25):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + 25))))


def test_an_empty_day_points_to_the_latest_day_with_images(seeded: Seeded, http: httpx.Client) -> None:
    html = http.get("/gallery?day=2020-01-01").text
    assert "Nothing on 2020-01-01" in html
    assert f'href="/gallery?day={seeded.day}"' in html
    assert tile_ids(html) == []


def test_days_link_to_each_other(seeded: Seeded, http: httpx.Client) -> None:
    today = http.get("/gallery").text
    assert f'href="/gallery?day={PAST}" class="older-day"' in today
    past = http.get(f"/gallery?day={PAST}").text
    assert f'href="/gallery?day={seeded.day}" class="newer-day"' in past
    assert tile_ids(past) == [seeded.edit_id, *seeded.past_ids[::-1]]
    assert re.search(r"\$0\.\d{4}", past)  # the cost the service priced the past day's generations at


def test_an_edit_shows_as_an_edit_with_its_input_and_mask(seeded: Seeded, http: httpx.Client) -> None:
    index = http.get(f"/gallery?day={PAST}").text
    tile = re.search(rf'data-id="{seeded.edit_id}">(.*?)</a>', index, re.S)
    assert tile is not None and "<span>edit</span>" in tile.group(1)
    detail = http.get(f"/gallery/{PAST}/{seeded.edit_id}").text
    assert f"<title>Edit {seeded.edit_id}" in detail and f"<h1>Edit {seeded.edit_id}</h1>" in detail and "<h2>Inputs</h2>" in detail
    source = f"{PAST}/{seeded.past_ids[0]}/0.png"
    assert f'src="/images/{source}"' in detail and f'src="/images/{seeded.mask_name}"' in detail
    assert f"mask · {seeded.mask_name}" in detail and "<dd>edit</dd>" in detail
    plain = http.get(f"/gallery/{PAST}/{seeded.past_ids[1]}").text
    assert f"<h1>Generation {seeded.past_ids[1]}</h1>" in plain and "Inputs" not in plain


def test_a_job_page_shows_its_record_and_events(seeded: Seeded, http: httpx.Client) -> None:
    html = http.get(f"/gallery/jobs/{seeded.jobs['succeeded']}").text
    assert "Job " + seeded.jobs["succeeded"] in html and "A lighthouse, as a background job" in html
    assert f"/images/jobs/{seeded.jobs['succeeded']}/0.png" in html and "Events" in html and "Record (JSON)" in html
    failed = http.get(f"/gallery/jobs/{seeded.jobs['failed']}").text
    assert "contentFilter: Your task failed as a result of our safety system." in failed and "<img" not in failed


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):  # CI must run the browser tests: dev.py test installs chromium there
            pytest.fail(f"CI has no chromium at /usr/bin/chromium (or $CHROMIUM): {INSTALL_HINT}")
        pytest.skip(f"no chromium at /usr/bin/chromium (or $CHROMIUM): {INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class Watched:
    """A page, and every problem it reported: console errors, script errors, failed or refused requests."""

    page: Any
    problems: list[str]


@pytest.fixture()
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    watched = Watched(tab, [])
    tab.on("console", lambda m: m.type == "error" and watched.problems.append(f"console: {m.text}"))
    tab.on("pageerror", lambda e: watched.problems.append(f"script: {e}"))
    tab.on("requestfailed", lambda r: watched.problems.append(f"failed: {r.url}"))
    tab.on("response", lambda r: r.status >= 400 and watched.problems.append(f"{r.status}: {r.url}"))
    tab.on("dialog", lambda d: watched.problems.append(f"dialog: {d.message}"))  # a prompt that ran as script
    yield watched
    context.close()


def every_image_decoded(page: Any) -> list[dict[str, Any]]:
    """Scroll each image into view (lazy ones load then), wait until all are complete; their sizes."""
    for image in page.locator("img").all():
        image.scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    return list(page.eval_on_selector_all("img", "els => els.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, alt: i.alt}))"))


def test_browser_loads_the_gallery_without_errors_and_every_tile_image_decodes(seeded: Seeded, page: Watched, tmp_path: Path) -> None:
    page.page.goto(f"{seeded.url}/gallery?code=fn-key-1")
    images = every_image_decoded(page.page)
    tiles = page.page.locator("a.tile")
    assert tiles.count() == len(seeded.sync_ids) + 3
    assert len(images) == len(seeded.sync_ids) + 1  # the failed and the queued job have no image
    assert all(i["w"] > 0 for i in images), images
    assert all(i["src"].endswith("?code=fn-key-1") and i["alt"] for i in images)
    assert page.page.locator(f"a.tile[data-id='{seeded.sync_ids[2]}'] .prompt").inner_text() == MARKUP  # text, and nothing ran
    assert page.page.locator(f"a.tile[data-id='{seeded.sync_ids[2]}'] img").get_attribute("alt") == MARKUP
    assert page.problems == []
    page.page.evaluate("window.scrollTo(0, 0)")
    shot = Image.open(io.BytesIO(page.page.screenshot())).convert("RGB")
    assert shot.size == (1280, 900) and len(shot.getcolors(1 << 24) or []) > 1000  # tiles, not a blank page
    target = Path(os.environ.get("GALLERY_SCREENSHOT") or tmp_path / "gallery.png")
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)  # ~120 KB for the README


def test_browser_filters_and_pages(seeded: Seeded, page: Watched) -> None:
    tab = page.page
    tab.goto(f"{seeded.url}/gallery?code=fn-key-1")
    tab.select_option("select[name=deployment]", "dall-e-3")
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"deployment=dall-e-3"))
    assert parse_qs(urlsplit(tab.url).query)["code"] == ["fn-key-1"]  # the form carried the key
    assert tab.locator("a.tile").evaluate_all("els => els.map(e => e.dataset.id)") == [seeded.sync_ids[3], seeded.jobs["notRunning"]]
    tab.select_option("select[name=deployment]", "")
    tab.select_option("select[name=status]", "failed")
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"status=failed"))
    assert tab.locator("a.tile").evaluate_all("els => els.map(e => e.dataset.id)") == [seeded.jobs["failed"]]

    tab.goto(f"{seeded.url}/gallery?per_page=4&code=fn-key-1")
    seen: list[str] = []
    while True:
        every_image_decoded(tab)
        seen += tab.locator("a.tile").evaluate_all("els => els.map(e => e.dataset.id)")
        older = tab.locator("a[rel=next]", has_text="Older")
        if older.count() == 0:
            break
        older.click()
        tab.wait_for_load_state()
    assert len(seen) == len(set(seen)) == len(seeded.sync_ids) + 3
    assert page.problems == []


def test_browser_keyboard_reaches_the_tiles_and_opens_a_generation(seeded: Seeded, page: Watched) -> None:
    tab = page.page
    tab.goto(f"{seeded.url}/gallery")
    newest = seeded.sync_ids[-1]
    focused: list[str] = []
    for _ in range(80):
        tab.keyboard.press("Tab")
        focused.append(tab.evaluate("(e => e.dataset.id || e.className || e.tagName)(document.activeElement)"))
        if focused[-1] == newest:
            break
    assert focused[0] == "skip" and focused[-1] == newest, focused  # the skip link, the filters, the days, then the newest tile
    assert "tile" not in focused and not any(f in seeded.sync_ids for f in focused[:-1])
    outline = tab.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")  # the focus is visible
    tab.keyboard.press("Enter")
    tab.wait_for_url(re.compile(rf"/gallery/{seeded.day}/{newest}$"))
    tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.className") == "skip"
    tab.locator("details summary").first.focus()
    tab.keyboard.press("Enter")  # opens the record
    record = json.loads(tab.locator("pre.record-json").inner_text())
    assert record["id"] == newest and record["prompt"] == SYNC[-1][1] and record["deployment"] == SYNC[-1][0]
    images = every_image_decoded(tab)
    assert [(i["w"], i["alt"]) for i in images] == [(1536, SYNC[-1][1])]  # full size
    assert page.problems == []


def test_browser_shows_an_edit_with_its_inputs_at_full_size(seeded: Seeded, page: Watched) -> None:
    tab = page.page
    tab.goto(f"{seeded.url}/gallery?code=k")
    tab.locator("nav.days a.older-day").click()
    tab.wait_for_url(re.compile(rf"day={PAST}"))
    tab.locator(f"a.tile[data-id='{seeded.edit_id}']").click()
    tab.wait_for_url(re.compile(seeded.edit_id))
    assert tab.locator("h1").inner_text() == f"Edit {seeded.edit_id}"
    assert tab.locator("h2", has_text="Inputs").count() == 1
    images = every_image_decoded(tab)
    expected = [f"/images/{PAST}/{seeded.past_ids[0]}/0.png", f"/images/{seeded.mask_name}", f"/images/{PAST}/{seeded.edit_id}/0.png"]
    assert [i["src"].split("?")[0] for i in images] == expected
    assert all(i["w"] == 1024 for i in images)  # at full size: the archived images themselves
    assert images[1]["alt"] == f"Mask of {seeded.edit_id}"
    assert "Cost" in tab.locator("dl.record").inner_text()
    assert page.problems == []


def test_browser_on_a_phone_fits_the_screen(seeded: Seeded, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        tab = context.new_page()
        tab.goto(f"{seeded.url}/gallery")
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        boxes = tab.locator("a.tile").evaluate_all("els => els.slice(0, 2).map(e => e.getBoundingClientRect().toJSON())")
        assert boxes[0]["width"] > 300 and boxes[1]["y"] > boxes[0]["y"]  # one column, full width
    finally:
        context.close()
