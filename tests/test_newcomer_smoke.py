"""Issue 15, finding 6: the deployment path ends in a smoke test a person can run, from the deployment's outputs.

infra/smoke_test.py is run here as a person runs it, against the local stack (the API over real HTTP,
a queue runner with the host's semantics, Azurite, the simulator) from an outputs file written in
each shape the tools print: `terraform output -json`, `az deployment ... --query properties.outputs`,
`azd env get-values`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from local.azurite import Azurite
from local.queue_runner import QueueRunner
from local.servers import ServerThread, serve_in_thread
from shared.api import create_app
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings
from tests.conftest import SimControl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "infra" / "smoke_test.py"


@pytest.fixture()
def deployed(make_settings: Callable[..., Settings], sim: SimControl) -> Iterator[tuple[ServerThread, Settings]]:
    """A local deployment: the API over HTTP and the queue trigger's stand-in, on a queue of their own."""
    settings = make_settings(IMAGES_QUEUE=f"smoke-{uuid.uuid4().hex[:12]}")
    api = serve_in_thread(create_app(Runtime(settings)))
    worker = Runtime(settings)
    runner = QueueRunner(
        settings.storage.connection_string, settings.queue_name, worker.handle_queue_message,
        host_queues=host_queue_settings(), max_poll_interval=0.2, on_stop=worker.close,
    ).start_in_thread()  # fmt: skip
    yield api, settings
    runner.stop()
    api.stop()


def arm_case(name: str) -> str:
    """An output name as ARM returns it: the case of its first word changed (AZURE_X -> azurE_X; Azure/azure-dev#512)."""
    first, sep, rest = name.partition("_")
    return first[:-1].lower() + first[-1] + sep + rest


def outputs_file(tmp_path: Path, shape: str, values: dict[str, str]) -> Path:
    path = tmp_path / f"outputs-{shape}"
    if shape == "terraform":
        path.write_text(json.dumps({name: {"sensitive": False, "type": "string", "value": v} for name, v in values.items()}))
    elif shape == "az":  # `az deployment sub show --query properties.outputs`, names as ARM returns them
        path.write_text(json.dumps({arm_case(name): {"type": "String", "value": v} for name, v in values.items()}))
    else:
        path.write_text("".join(f'{name}="{v}"\n' for name, v in values.items()))
    return path


def smoke_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTPUTS = {"AZURE_FUNCTION_URL": "https://func-abc.azurewebsites.net", "AZURE_FUNCTION_APP_NAME": "func-abc",
           "AZURE_OPENAI_DEPLOYMENT": "gpt-image-2", "IMAGES_QUEUE": "image-jobs"}  # fmt: skip


@pytest.mark.parametrize("shape", ["terraform", "az", "azd"])
def test_outputs_are_read_in_the_shape_each_tool_prints(tmp_path: Path, shape: str) -> None:
    path = outputs_file(tmp_path, shape, OUTPUTS)
    if shape == "az":
        assert "azurE_FUNCTION_APP_NAME" in path.read_text(), "the names as ARM returns them"
    assert smoke_module().read_outputs(path) == OUTPUTS


def _readme_out_helpers() -> list[str]:
    helpers = []
    for readme in (ROOT / "docs" / "deploying.md",):
        helpers += re.findall(r"(?m)^out\(\) \{.*; \}", readme.read_text(encoding="utf-8"))
    return helpers


@pytest.mark.parametrize("shape", ["terraform", "az"])
def test_the_readmes_out_helper_reads_output_names_in_any_case(tmp_path: Path, shape: str) -> None:
    """The `out NAME` helper docs/deploying.md defines, run by bash on outputs as each tool writes them."""
    helpers = _readme_out_helpers()
    assert len(helpers) >= 2 and len(set(helpers)) == 1, f"one out() helper, the same in every place: {helpers}"
    (tmp_path / "outputs.json").write_text(outputs_file(tmp_path, shape, OUTPUTS).read_text())
    script = f"{helpers[0]}\nout AZURE_FUNCTION_APP_NAME\nout IMAGES_QUEUE\n"
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["func-abc", "image-jobs"]


def test_no_readme_reads_an_output_by_its_exact_name() -> None:
    """`--query properties.outputs.NAME` (JMESPath) is case-sensitive and finds nothing where ARM changed the case."""
    for readme in (ROOT / "README.md", ROOT / "infra" / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = readme.read_text(encoding="utf-8")
        assert not re.search(r"properties\.outputs\.[A-Z$]", text), f"{readme.name} reads an output by its exact name"


def test_smoke_test_generates_one_image_and_runs_one_queued_job_from_the_outputs(
    deployed: tuple[ServerThread, Settings], azurite: Azurite, sim: SimControl, tmp_path: Path
) -> None:
    api, settings = deployed
    outputs = {"AZURE_FUNCTION_URL": api.url, "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini", "IMAGES_QUEUE": settings.queue_name}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--outputs", str(outputs_file(tmp_path, "terraform", outputs)),
         "--queue-connection-string", azurite.connection_string, "--poll", "0.2", "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/3 generated: HTTP 200" in done.stdout and "2/3 queued job smoke-" in done.stdout and "succeeded" in done.stdout
    assert "3/3 streamed: 1 partial image(s), then the completed event, archived as images/" in done.stdout
    assert sim.stats()["generations"] == 3


def test_the_smoke_tests_stream_is_skipped_for_a_model_that_does_not_stream(
    deployed: tuple[ServerThread, Settings], sim: SimControl, capsys: pytest.CaptureFixture[str]
) -> None:
    api, _ = deployed
    with httpx.Client(base_url=api.url, timeout=60) as http:
        smoke_module().stream_one(http, "dall-e-3")
    assert "3/3 stream: skipped (the deployment's model does not stream)" in capsys.readouterr().out
    assert sim.stats()["requests"] == 0


def test_the_smoke_test_names_an_empty_500_in_front_of_a_stream_for_what_it_is() -> None:
    """What Azure/azure-functions-mcp-extension#273 reports of App Service authentication on Flex Consumption: an empty 500
    for a POST answered with events. The platform cannot run here; this transport answers as the report says it does."""
    smoke = smoke_module()
    platform = httpx.MockTransport(lambda request: httpx.Response(500, headers={"content-length": "0"}))
    with httpx.Client(base_url="https://func-abc.azurewebsites.net", transport=platform) as http, pytest.raises(smoke.SmokeFailed) as failed:
        smoke.stream_one(http, "gpt-image-2")
    assert "azure-functions-mcp-extension#273" in str(failed.value)
    assert "See docs/streaming.md: streams behind App Service authentication." in str(failed.value)
    assert "\n### Streams behind App Service authentication\n" in (ROOT / "docs" / "streaming.md").read_text(encoding="utf-8")
    app_error = httpx.MockTransport(lambda request: httpx.Response(500, json={"error": {"code": "InternalServerError"}}, headers={"x-request-id": "r"}))
    with httpx.Client(base_url="https://func-abc.azurewebsites.net", transport=app_error) as http, pytest.raises(smoke.SmokeFailed) as failed:
        smoke.stream_one(http, "gpt-image-2")
    assert "#273" not in str(failed.value) and "InternalServerError" in str(failed.value)


def test_smoke_test_says_what_is_missing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env={"PATH": ""})
    assert done.returncode == 1 and "smoke test failed: give the deployment's outputs" in done.stderr
