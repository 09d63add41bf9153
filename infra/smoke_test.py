"""Smoke-test a deployment from its outputs: generate one image over HTTP, drop one job on the queue, stream one
generation with a partial image, and see each archived.

    .venv/bin/python infra/smoke_test.py --outputs outputs.json       terraform output -json > outputs.json,
                                                                      or az deployment sub show ... --query properties.outputs
    eval "$(azd env get-values)" && .venv/bin/python infra/smoke_test.py      the outputs from the environment (azd)

Every value can also be given as an option or read from the environment under the output's name:
AZURE_FUNCTION_URL, AZURE_OPENAI_DEPLOYMENT, AZURE_STORAGE_QUEUE_ENDPOINT, IMAGES_QUEUE.

How it calls the API: in the entra way (IMAGES_CALLER_SCOPE is in the outputs) with a token of your
`az login` for that scope (`az account get-access-token --scope ...`; the first time, `az login --scope
<IMAGES_CALLER_SCOPE>` asks your consent), or IMAGES_TOKEN (--token) as given; your account needs the
operator app role, which the templates give `principalId`: the queued job is the queue's caller's, which
only operators see over HTTP. In the key way with the function key: FUNCTION_KEY (--function-key), or
fetched with `az` from AZURE_RESOURCE_GROUP and AZURE_FUNCTION_APP_NAME.

The queue message is sent with your Entra ID login (DefaultAzureCredential: `az login`), which needs
Storage Queue Data Contributor or Message Sender on the queue (the templates grant it to `principalId`
and to `callerPrincipalIds`). Against the local stack (entra mode): --url http://127.0.0.1:7071
--queue-connection-string "$AzureWebJobsStorage" (serve prints it) --token "$(python3 dev.py token
--principal smoke --roles Images.Operator)".

The stream is checked last, because the platform in front of the app may be what breaks it: a streamed answer
replaced by an empty 500 that the app did not write is reported as such (docs/streaming.md: streams behind App
Service authentication). A deployment whose model does not stream skips that step.

Exit code 0 when the image, the job and the stream succeeded; 1 otherwise, with the reason.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

API_VERSION = "2025-04-01-preview"
PROMPT = "A lighthouse at dawn, watercolor (smoke test)"


class SmokeFailed(Exception):
    """What did not work, in one sentence."""


def read_outputs(path: Path) -> dict[str, str]:
    """Deployment outputs from ``terraform output -json``, ``az deployment ... --query properties.outputs`` or ``azd env get-values``.

    Names are read case-insensitively (returned in upper case, as declared): ARM does not keep the
    case of output names and returns e.g. ``azurE_FUNCTION_APP_NAME`` (Azure/azure-dev#512, Azure/bicep#9360).
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        found = {}
        for line in text.splitlines():  # azd: NAME="value"
            name, sep, value = line.partition("=")
            if sep and name.strip():
                found[name.strip().upper()] = value.strip().strip('"')
        return found
    return {name.upper(): str(entry["value"]) if isinstance(entry, dict) else str(entry) for name, entry in data.items()}


def _config(args: argparse.Namespace, outputs: Mapping[str, str]) -> dict[str, str]:
    def pick(option: str | None, name: str, default: str = "") -> str:
        return option or outputs.get(name) or os.environ.get(name, "") or default

    return {
        "url": pick(args.url, "AZURE_FUNCTION_URL").rstrip("/"),
        "deployment": pick(args.deployment, "AZURE_OPENAI_DEPLOYMENT"),
        "queue": pick(args.queue, "IMAGES_QUEUE", "image-jobs"),
        "queue_endpoint": pick(args.queue_endpoint, "AZURE_STORAGE_QUEUE_ENDPOINT"),
        "queue_connection_string": args.queue_connection_string or "",
        "key": pick(args.function_key, "FUNCTION_KEY"),
        "scope": pick(args.scope, "IMAGES_CALLER_SCOPE"),
        "token": pick(args.token, "IMAGES_TOKEN"),
        "resource_group": outputs.get("AZURE_RESOURCE_GROUP") or os.environ.get("AZURE_RESOURCE_GROUP", ""),
        "app": outputs.get("AZURE_FUNCTION_APP_NAME") or os.environ.get("AZURE_FUNCTION_APP_NAME", ""),
    }


def function_key(config: Mapping[str, str]) -> str:
    """The function key: given, or fetched with `az` for an app in Azure; none for a local stack (no key there)."""
    if config["key"] or not config["url"].startswith("https://"):
        return config["key"]
    az = shutil.which("az")
    if not (az and config["resource_group"] and config["app"]):
        raise SmokeFailed("no function key: give --function-key (or FUNCTION_KEY), or AZURE_RESOURCE_GROUP and AZURE_FUNCTION_APP_NAME with `az` logged in")
    found = subprocess.run(  # noqa: S603  # az from PATH, with the names the deployment output
        [az, "functionapp", "keys", "list", "-g", config["resource_group"], "-n", config["app"], "--query", "functionKeys.default", "-o", "tsv"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0 or not found.stdout.strip():
        raise SmokeFailed(f"`az functionapp keys list` failed: {found.stderr.strip()[:300]}")
    return found.stdout.strip()


def entra_token(config: Mapping[str, str]) -> str:
    """A bearer token for the app: given, or your `az login`'s for the app's scope."""
    if config["token"]:
        return config["token"]
    az = shutil.which("az")
    if not az:
        raise SmokeFailed(f"no token: give --token (IMAGES_TOKEN), or install the Azure CLI and `az login --scope {config['scope']}`")
    found = subprocess.run(  # noqa: S603  # az from PATH, with the scope the deployment output
        [az, "account", "get-access-token", "--scope", config["scope"], "--query", "accessToken", "-o", "tsv"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0 or not found.stdout.strip():
        raise SmokeFailed(f"`az account get-access-token` failed (the first time, `az login --scope {config['scope']}`): {found.stderr.strip()[:300]}")
    return found.stdout.strip()


def auth_headers(config: Mapping[str, str]) -> dict[str, str]:
    """How this deployment knows its callers: a bearer token (entra way, or one given) or the function key."""
    if config["token"] or config["scope"]:
        return {"Authorization": f"Bearer {entra_token(config)}"}
    key = function_key(config)
    return {"x-functions-key": key} if key else {}


def generate_one(http: httpx.Client, deployment: str) -> str:
    """POST one generation; the archived blob's name."""
    response = http.post(
        f"/openai/deployments/{deployment}/images/generations",
        params={"api-version": API_VERSION},
        json={"prompt": PROMPT, "size": "1024x1024", "quality": "low"},
    )
    if response.status_code != 200:
        raise SmokeFailed(f"generation: HTTP {response.status_code} {response.text[:500]}")
    item = response.json()["data"][0]
    image = httpx.get(item["url"], timeout=60)
    if image.status_code != 200 or (item.get("b64_json") and base64.b64decode(item["b64_json"]) != image.content):
        raise SmokeFailed(f"the archived copy does not answer as returned (HTTP {image.status_code})")
    name = httpx.URL(item["url"]).path.split("/images/", 1)[-1]
    print(f"1/3 generated: HTTP 200, request {response.headers.get('x-request-id')}, archived as images/{name} ({len(image.content)} bytes)")
    return name


PLATFORM_500 = (
    "a streamed generation got HTTP 500 with an empty body and none of the app's headers (no x-request-id): something in front "
    "of the app failed its text/event-stream answer. With App Service authentication on Flex Consumption this is what "
    "Azure/azure-functions-mcp-extension#273 reports (open, no fix or workaround published); plain requests work. "
    "See docs/streaming.md: streams behind App Service authentication."
)


def stream_one(http: httpx.Client, deployment: str) -> None:
    """POST one streamed generation (one partial image asked): partial images, then the completed event, whose
    archived copy answers with the same bytes. Skipped when the deployment's model does not stream."""
    body = {"prompt": PROMPT, "size": "1024x1024", "quality": "low", "stream": True, "partial_images": 1}
    path = f"/openai/deployments/{deployment}/images/generations"
    with http.stream("POST", path, params={"api-version": API_VERSION}, json=body) as response:
        if response.status_code != 200:
            text = response.read()
            if response.status_code == 500 and not text.strip() and "x-request-id" not in response.headers:
                raise SmokeFailed(PLATFORM_500)
            if response.status_code == 400 and json.loads(text or b"{}").get("error", {}).get("param") == "stream":
                print("3/3 stream: skipped (the deployment's model does not stream)")
                return
            raise SmokeFailed(f"stream: HTTP {response.status_code} {text[:500]!r}")
        events = read_events(response)
    kinds = [kind for kind, _ in events]
    if not kinds or kinds[-1] != "image_generation.completed" or set(kinds[:-1]) - {"image_generation.partial_image"}:
        raise SmokeFailed(f"stream: events {kinds} (request {response.headers.get('x-request-id')}): {events[-1][1] if events else 'none'}")
    completed = events[-1][1]
    link = http.get(completed["url"])  # the stable link: a redirect to a fresh read-only SAS, followed without the caller's credentials
    image = httpx.get(link.headers.get("location", ""), timeout=60) if link.status_code == 302 else link
    if image.status_code != 200 or base64.b64decode(completed["b64_json"]) != image.content:
        raise SmokeFailed(f"the streamed image's archived copy does not answer as streamed (HTTP {link.status_code}, then {image.status_code})")
    print(f"3/3 streamed: {len(kinds) - 1} partial image(s), then the completed event, archived as images/{completed['name']}")


def read_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The (type, data) of each server-sent event of ``response``; comments (keep-alives) skipped."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind, data = "", list[str]()
    for line in response.iter_lines():
        if not line:
            if kind:
                events.append((kind, json.loads("\n".join(data))))
            kind, data = "", []
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
    return events


def send_job(config: Mapping[str, str], job_id: str) -> None:
    """Drop one job on the queue, as a calling service does."""
    from azure.storage.queue import QueueClient

    message = json.dumps({"id": job_id, "deployment": config["deployment"], "prompt": PROMPT})
    if config["queue_connection_string"]:
        queue = QueueClient.from_connection_string(config["queue_connection_string"], config["queue"])
    elif config["queue_endpoint"]:
        from azure.identity import DefaultAzureCredential

        queue = QueueClient(config["queue_endpoint"], config["queue"], credential=DefaultAzureCredential())
    else:
        raise SmokeFailed("no queue: give --queue-endpoint (AZURE_STORAGE_QUEUE_ENDPOINT) or --queue-connection-string")
    with queue:
        queue.send_message(message)


def wait_for_job(http: httpx.Client, job_id: str, timeout: float, poll: float) -> dict[str, Any]:
    """Poll the job's status until it ends (a tool's loop: it waits on a service in the cloud)."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/openai/operations/images/{job_id}")
        if response.status_code == 200 and response.json()["status"] in ("succeeded", "failed"):
            view: dict[str, Any] = response.json()
            return view
        if response.status_code not in (200, 404):  # 404: the message is not picked up yet
            raise SmokeFailed(f"job status: HTTP {response.status_code} {response.text[:300]}")
        if time.monotonic() > deadline:
            raise SmokeFailed(f"job {job_id} did not finish within {timeout:g} s (is the queue trigger running?)")
        time.sleep(poll)


def run(config: Mapping[str, str], timeout: float, poll: float) -> None:
    """The three checks; SmokeFailed says what failed."""
    if not (config["url"] and config["deployment"]):
        raise SmokeFailed("give the deployment's outputs (--outputs) or --url and --deployment")
    with httpx.Client(base_url=config["url"], headers=auth_headers(config), timeout=300) as http:
        health = http.get("/healthz")
        if health.status_code != 200 or config["deployment"] not in health.json().get("deployments", []):
            raise SmokeFailed(f"/healthz: HTTP {health.status_code} {health.text[:300]}")
        generate_one(http, config["deployment"])
        job_id = f"smoke-{uuid.uuid4().hex[:12]}"
        send_job(config, job_id)
        view = wait_for_job(http, job_id, timeout, poll)
        if view["status"] != "succeeded":
            raise SmokeFailed(f"job {job_id} failed: {view.get('error')}")
        names = ", ".join(f"images/{item['name']}" for item in view["result"]["data"])
        print(f"2/3 queued job {job_id}: succeeded, archived as {names}")
        stream_one(http, config["deployment"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/smoke_test.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, help="outputs file: terraform output -json, az deployment outputs, or azd env get-values")
    parser.add_argument("--url", help="the function app's URL (AZURE_FUNCTION_URL)")
    parser.add_argument("--deployment", help="the model deployment (AZURE_OPENAI_DEPLOYMENT)")
    parser.add_argument("--function-key", help="the function key (FUNCTION_KEY), the key way; default: fetched with az")
    parser.add_argument("--scope", help="the app's Entra ID scope (IMAGES_CALLER_SCOPE), the entra way: a token for it from `az account get-access-token`")
    parser.add_argument("--token", help="a bearer token as it is (IMAGES_TOKEN), e.g. `python3 dev.py token` for the local stack")
    parser.add_argument("--queue", help="the job queue (IMAGES_QUEUE, default image-jobs)")
    parser.add_argument("--queue-endpoint", help="queue service URL (AZURE_STORAGE_QUEUE_ENDPOINT); sent with your Entra ID login")
    parser.add_argument("--queue-connection-string", help="a connection string instead (the local stack's Azurite)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the queued job (default 600)")
    parser.add_argument("--poll", type=float, default=5, help="seconds between status polls (default 5)")
    args = parser.parse_args(argv)
    try:
        outputs = read_outputs(args.outputs) if args.outputs else {}
        run(_config(args, outputs), args.timeout, args.poll)
    except (SmokeFailed, OSError, httpx.HTTPError) as exc:
        print(f"smoke test failed: {exc}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
