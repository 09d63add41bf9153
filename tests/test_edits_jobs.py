"""Background edits: :submit stores the inputs, then queues them by name; the job handler edits once.

The API runs in process; the queue runner (the Functions trigger's stand-in, with the host's
delivery rules) runs the handler against real Azurite and the simulator. A crash is
injected through the runner's storage clients (``raw_request_hook``), never into the code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from local.azurite import Azurite
from local.queue_runner import QueueRunner, SimulatedCrash
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings
from tests import scoping
from tests.conftest import SimControl
from tests.test_edits import EDITS, GREEN, InProcess, image_bytes, input_name, mask_bytes, multipart, pixels

HOST_QUEUES = host_queue_settings()
SUBMIT = "/openai/deployments/{}/images/edits:submit?api-version=2025-04-01-preview"


class Queued:
    """One test's queue, containers, API in process and queue runners."""

    def __init__(self, settings: Settings, azurite: Azurite, client: httpx.AsyncClient) -> None:
        self.settings, self.azurite, self.client = settings, azurite, client
        self.runners: list[QueueRunner] = []

    def run(self, storage_options: dict[str, Any] | None = None) -> QueueRunner:
        """A runner with a runtime of its own (its own event loop), as the Functions worker would have."""
        runtime = Runtime(self.settings, storage_options=storage_options)
        runner = QueueRunner(
            self.azurite.connection_string, self.settings.queue_name, runtime.handle_queue_message, host_queues=HOST_QUEUES,
            retry_delay=0, lease_seconds=2, max_poll_interval=0.1, crash_visibility=0, on_stop=runtime.close,
        )  # fmt: skip
        self.runners.append(runner.start_in_thread())
        return runner

    def drop(self, message: dict[str, Any]) -> None:
        queue = QueueClient.from_connection_string(self.azurite.connection_string, self.settings.queue_name)
        try:
            queue.create_queue()
        except Exception:  # noqa: S110  # exists already
            pass
        queue.send_message(json.dumps(message))

    def blob(self, container: str, name: str) -> bytes:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string).get_blob_client(container, name).download_blob().readall()

    async def status(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/openai/operations/images/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture()
async def queued(in_process: InProcess, make_settings: Callable[..., Settings], azurite: Azurite) -> Any:
    overrides = {"IMAGES_QUEUE": f"edits-{uuid.uuid4().hex[:10]}", "IMAGES_CONTAINER": f"edits-{uuid.uuid4().hex[:10]}", "IMAGES_UPSTREAM_TIMEOUT_SECONDS": "30"}
    made = Queued(make_settings(**overrides), azurite, await in_process(**overrides))
    yield made
    for runner in made.runners:
        runner.stop()


@pytest.fixture()
def crash_before_record() -> Iterator[Callable[[str], Any]]:
    """A raw_request_hook that kills the worker once, just before the job's record is written (its images are)."""
    hooks: list[Any] = []

    def make(job_id: str) -> Any:
        def hook(request: Any) -> None:
            http = request.http_request
            if not hooks[0].crashed and http.method == "PUT" and http.url.split("?")[0].endswith(f"/jobs/{job_id}/record.json"):
                hooks[0].crashed = True
                raise SimulatedCrash("the edit's images are archived, its record not yet")

        hook.crashed = False  # type: ignore[attr-defined]
        hooks.append(hook)
        return hook

    yield make


async def test_submitted_multipart_edit_survives_a_crash_without_a_second_upstream_call(
    queued: Queued, sim: SimControl, crash_before_record: Callable[[str], Any]
) -> None:
    key = f"edit-{uuid.uuid4().hex[:8]}"
    source, mask = image_bytes(colour=GREEN), mask_bytes()
    content, headers = multipart({"prompt": "survive", "n": "2"}, [("image", source), ("mask", mask)])
    accepted = await queued.client.post(SUBMIT.format("gpt-image-1"), content=content, headers={**headers, "Idempotency-Key": key})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]  # the key, scoped by deployment (and caller)
    assert accepted.headers["Operation-Location"].split("?")[0].endswith(f"/openai/operations/images/{job_id}")
    # The inputs are in the archive before the job runs; the message names them.
    assert queued.blob(queued.settings.images_container, input_name(queued.azurite, source)) == source
    hook = crash_before_record(job_id)
    stats = queued.run({"raw_request_hook": hook}).drain(received=2)  # the crashed delivery and the one after it
    assert hook.crashed and stats.crashed == 1 and [o.action for o in stats.outcomes] == ["succeeded"]
    assert sim.stats()["edits"] == 1  # never paid twice
    view = await queued.status(job_id)
    assert view["status"] == "succeeded" and len(view["result"]["data"]) == 2
    record = json.loads(queued.blob(queued.settings.images_container, f"jobs/{job_id}/record.json"))
    assert record["recovered"] and record["operation"] == "edit"
    assert record["cost"]["usd"] > 0 and "gpt-image-1" in record["cost"]["basis"]  # priced from the usage kept with the images
    assert record["inputs"] == {"image": [input_name(queued.azurite, source)], "mask": input_name(queued.azurite, mask)}
    out = pixels(httpx.get(view["result"]["data"][0]["url"]).content)
    assert out.getpixel((40, 30)) == GREEN


async def test_a_queue_message_names_archived_inputs_of_the_queue_only(queued: Queued, sim: SimControl) -> None:
    """A queued edit names archived images by name, as a JSON edit does; the queue is a caller of its own
    (issue 21), so it may name the images its own jobs made, and another caller's are as if they did not exist."""
    source = image_bytes(colour=GREEN)
    content, headers = multipart({"prompt": "store it"}, [("image", source)])
    assert (await queued.client.post(EDITS.format("gpt-image-1-mini"), content=content, headers=headers)).status_code == 200
    made = f"made-{uuid.uuid4().hex[:8]}"
    queued.drop({"id": made, "deployment": "gpt-image-2", "prompt": "a queue's own image", "size": "1024x1024"})
    runner = queued.run()
    runner.drain(received=1)
    own = f"jobs/{made}/0.png"
    job_id = f"drop-{uuid.uuid4().hex[:8]}"
    queued.drop({"id": job_id, "deployment": "gpt-image-2", "operation": "edit", "image": [own], "prompt": "from the queue"})
    others = f"others-{uuid.uuid4().hex[:8]}"  # the key holder's upload: not the queue's
    queued.drop({"id": others, "deployment": "gpt-image-2", "operation": "edit", "image": [input_name(queued.azurite, source)], "prompt": "x"})
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    queued.drop({"id": missing, "deployment": "gpt-image-2", "operation": "edit", "image": [f"inputs/{'0' * 64}.png"], "prompt": "x"})
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    queued.drop({"id": wrong, "deployment": "gpt-image-2", "operation": "variation", "image": [own], "prompt": "x"})
    runner.drain(received=5)
    assert (await queued.status(job_id))["status"] == "succeeded"
    page = (await queued.client.get(f"/gallery/jobs/{job_id}")).text  # the gallery shows it as the edit it is
    assert f"<h1>Edit job {job_id}</h1>" in page and f'src="/images/{own}"' in page and "background edit" in page
    failed = {j: (await queued.status(j))["error"] for j in (others, missing, wrong)}
    assert failed[missing]["param"] == failed[others]["param"] == "image" and failed[wrong]["param"] == "operation"
    assert failed[others]["message"].replace(input_name(queued.azurite, source), "N") == failed[missing]["message"].replace(f"inputs/{'0' * 64}.png", "N")
    assert sim.stats()["edits"] == 2  # the synchronous one and the queued one; the refused jobs called nobody


async def test_submit_is_idempotent_on_the_inputs_bytes(queued: Queued, sim: SimControl) -> None:
    key = f"same-{uuid.uuid4().hex[:8]}"
    first = multipart({"prompt": "same"}, [("image", image_bytes())])
    again = multipart({"prompt": "same"}, [("image", image_bytes())])  # another boundary, the same bytes
    other = multipart({"prompt": "same"}, [("image", image_bytes(colour=GREEN))])
    path = EDITS.format("gpt-image-1")
    answers = [await queued.client.post(path, content=body, headers={**headers, "Idempotency-Key": key, "Prefer": "respond-async"}) for body, headers in (first, again, other)]
    assert [a.status_code for a in answers] == [202, 202, 409]
    assert answers[0].json()["id"] == answers[1].json()["id"] == scoping.job_id(queued.azurite, "gpt-image-1", key)
    assert answers[2].json()["error"]["param"] == "Idempotency-Key"
    queue = QueueClient.from_connection_string(queued.azurite.connection_string, queued.settings.queue_name)
    assert queue.get_queue_properties().approximate_message_count == 1
    assert sim.stats()["requests"] == 0


async def test_an_edit_whose_request_would_not_fit_a_queue_message_is_queued_by_its_record(queued: Queued, sim: SimControl) -> None:
    content, headers = multipart({"prompt": "€" * 20000}, [("image", image_bytes())])  # 60 KB of UTF-8, over 64 KB once escaped
    accepted = await queued.client.post(SUBMIT.format("gpt-image-1"), content=content, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    [message] = QueueClient.from_connection_string(queued.azurite.connection_string, queued.settings.queue_name).peek_messages()
    assert json.loads(message.content) == {"job": job_id}  # a claim check: the job record holds the request
    queued.run().drain(received=1)
    assert (await queued.status(job_id))["status"] == "succeeded" and sim.stats()["edits"] == 1


async def test_a_failed_queued_edit_leaves_a_failure_record_as_a_queued_generation_does(queued: Queued, azurite: Azurite, sim: SimControl) -> None:
    content, headers = multipart({"prompt": "flagged [[filter:prompt]]"}, [("image", image_bytes())])
    accepted = await queued.client.post(SUBMIT.format("gpt-image-1"), content=content, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    queued.run().drain(received=1)
    view = await queued.status(job_id)
    assert view["status"] == "failed" and view["error"]["code"] == "contentFilter"
    images = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(queued.settings.images_container)
    [name] = [b.name for b in images.list_blobs(name_starts_with=f"jobs/{job_id}/")]
    record = json.loads(queued.blob(queued.settings.images_container, name))
    assert name.rsplit("/", 1)[1].startswith("failed-") and record["kind"] == "job" and record["operation"] == "edit"
    assert record["inputs"]["image"] == [input_name(queued.azurite, image_bytes())]
    assert sim.stats()["requests"] == 1
