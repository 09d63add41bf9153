"""The simulator streams partial images as upstream does (local/sim_stream.py), read with the openai SDK unchanged."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import sys
import threading

import httpx
import openai
import pytest
from PIL import Image

from local.servers import ServerThread
from local.sim_stream import ImageStream, QuietCuts, SimulatedCut, StreamedImage, stream_events
from tests.conftest import SIM_KEY, SimControl

API_VERSION = "2025-04-01-preview"


def azure(simulator: ServerThread) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=simulator.url, api_key=SIM_KEY, api_version=API_VERSION, max_retries=0, timeout=30)


def v1(simulator: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{simulator.url}/openai/v1", api_key=SIM_KEY, max_retries=0, timeout=30)


def decoded(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


@pytest.mark.parametrize("client", [azure, v1], ids=["AzureOpenAI", "OpenAI-v1"])
def test_a_streamed_generation_sends_its_partial_images_in_order_then_the_completed_image(
    simulator: ServerThread, sim: SimControl, client: object
) -> None:
    plain = azure(simulator).images.generate(model="gpt-image-1.5", prompt="otter", size="1024x1024", quality="low")
    events = list(client(simulator).images.generate(model="gpt-image-1.5", prompt="otter", size="1024x1024", quality="low", stream=True, partial_images=2))  # type: ignore[operator]
    assert [(e.type, getattr(e, "partial_image_index", None)) for e in events] == [
        ("image_generation.partial_image", 0), ("image_generation.partial_image", 1), ("image_generation.completed", None)
    ]  # fmt: skip
    completed = events[-1]
    assert decoded(completed.b64_json).size == (1024, 1024)
    assert len({e.b64_json for e in events}) == 3  # each partial image is an image of its own
    assert all(decoded(e.b64_json).format == "PNG" for e in events)
    assert (completed.size, completed.quality, completed.output_format) == ("1024x1024", "low", "png")
    assert plain.usage is not None
    # The final image's usage, as unstreamed: the service prices the partial images on top (shared/pricing.py), once.
    assert completed.usage.output_tokens == plain.usage.output_tokens and completed.usage.total_tokens == plain.usage.total_tokens
    assert sim.stats()["succeeded"] == 2 and sim.stats()["generations"] == 2


def test_a_streamed_edit_uses_the_edit_event_names(simulator: ServerThread, sim: SimControl) -> None:
    source = io.BytesIO()
    Image.new("RGB", (1024, 1024), (10, 200, 30)).save(source, "PNG")
    events = list(
        azure(simulator).images.edit(
            model="gpt-image-1.5", image=("in.png", source.getvalue(), "image/png"), prompt="paint it", stream=True, partial_images=1
        )
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert decoded(events[-1].b64_json).getpixel((512, 512)) == (10, 200, 30)  # the edit of the input
    assert sim.stats()["edits"] == 1


def test_a_stream_without_partial_images_is_one_completed_event(simulator: ServerThread, sim: SimControl) -> None:
    events = list(azure(simulator).images.generate(model="gpt-image-2", prompt="otter", stream=True))
    assert [e.type for e in events] == ["image_generation.completed"]


def test_the_events_are_spaced_evenly_over_the_latency() -> None:
    """Time is an input: the waits the stream asks for, recorded instead of slept."""
    waits: list[float] = []

    async def wait(seconds: float) -> bool:
        waits.append(seconds)
        return True

    async def run() -> list[bytes]:
        stream = ImageStream("image_generation", {"size": "1024x1024"}, [StreamedImage([b"AA", b"BB", b"CC"], b"DD", {"output_tokens": 1})], 8.0)
        return [event async for event in stream_events(stream, wait, lambda: 0, on_completed=lambda: None)]

    events = asyncio.run(run())
    assert waits == [2.0, 2.0, 2.0, 2.0]
    assert [e.split(b"\n", 1)[0] for e in events] == [b"event: image_generation.partial_image"] * 3 + [b"event: image_generation.completed"]


def test_a_cut_stream_ends_after_k_events_without_the_completed_image(simulator: ServerThread, sim: SimControl) -> None:
    seen = []
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        for event in azure(simulator).images.generate(model="gpt-image-1.5", prompt="otter [[stream-cut:1]]", stream=True, partial_images=3):
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"]
    assert sim.stats()["generations"] == 1 and sim.stats()["succeeded"] == 0  # billed, never completed


class Kept(logging.Handler):
    """The records a logger lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_cut_asked_for_leaves_no_traceback_in_the_servers_log_and_any_other_exception_still_does(simulator: ServerThread, sim: SimControl) -> None:
    server_log, kept = logging.getLogger("uvicorn.error"), Kept()
    server_log.addHandler(kept)
    try:
        with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
            list(azure(simulator).images.generate(model="gpt-image-1.5", prompt="otter [[stream-cut:1]]", stream=True, partial_images=2))
    finally:
        server_log.removeHandler(kept)
    # uvicorn logs an application's exception before it closes the connection: by the client's error it was filtered or kept.
    assert [r.getMessage() for r in kept.records if r.exc_info] == []
    assert sim.stats()["generations"] == 1
    for exc in (SimulatedCut("cut"), ConnectionAbortedError("a real abort"), RuntimeError("a bug")):
        try:
            raise exc
        except Exception:
            record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, sys.exc_info())
        assert QuietCuts().filter(record) is not isinstance(exc, SimulatedCut)


def test_an_error_event_ends_the_stream_and_the_sdk_raises_it(simulator: ServerThread, sim: SimControl) -> None:
    seen = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        for event in v1(simulator).images.generate(model="gpt-image-1.5", prompt="otter [[stream-error:2]]", stream=True, partial_images=3):
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"] * 2


def test_a_stalled_stream_holds_the_connection_until_released(simulator: ServerThread, sim: SimControl) -> None:
    seen: list[str] = []

    def read() -> None:
        for event in azure(simulator).images.generate(model="gpt-image-1.5", prompt="otter [[stream-stall:1]]", stream=True, partial_images=2):
            seen.append(event.type)

    reader = threading.Thread(target=read)
    reader.start()
    sim.wait(at_least={"in_flight": 1})
    assert sim.release() == 1  # the stall ends only now: the stream closes without its completed event
    reader.join(30)
    assert seen == ["image_generation.partial_image"]


def test_dall_e_3_knows_no_stream_parameter(simulator: ServerThread, sim: SimControl) -> None:
    with pytest.raises(openai.BadRequestError, match="Unknown parameter: 'stream'"):
        list(azure(simulator).images.generate(model="dall-e-3", prompt="otter", stream=True))
