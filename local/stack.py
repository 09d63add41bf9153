"""The whole service on a laptop: Azurite, the images simulator, the API and the queue runner.

    python -m local.stack run     generate one image (and one background job), print where they are, stop
    python -m local.stack serve   serve on http://127.0.0.1:7071 until Ctrl-C or SIGTERM

With ``AZURE_OPENAI_ENDPOINT`` (and friends) set in the environment, the real
model service is used instead of the simulator; with ``AzureWebJobsStorage``
set, that storage is used instead of Azurite. Azurite keeps its data in
``.azurite/`` so what ``run`` archived is still there for ``serve``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from local.azurite import ROOT, Azurite, start_azurite
from local.queue_runner import QueueRunner
from local.servers import ServerThread, serve_in_thread
from local.sim_pool import stack_pool
from local.simulator import SimulatorConfig, create_simulator
from shared import redaction
from shared.api import create_app
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings

log = logging.getLogger("local.stack")

SIMULATED_DEPLOYMENTS = "gpt-image-1-mini=gpt-image-1-mini,gpt-image-1=gpt-image-1,gpt-image-1.5=gpt-image-1.5,gpt-image-2=gpt-image-2,dall-e-3=dall-e-3"
DEMO_PROMPT = "A multi-colored umbrella on the beach, disposable camera"


@dataclass
class Stack:
    """What is running, and the settings the app got."""

    settings: Settings
    api: ServerThread
    env: dict[str, str]
    azurite: Azurite | None = None
    simulator: ServerThread | None = None
    extras: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def stack_env(azurite: Azurite | None, simulator: ServerThread | None, sim_key: str) -> dict[str, str]:
    """Settings for the app: the real service from the environment, else the local stand-ins."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    if simulator is not None:
        env.update(
            AZURE_OPENAI_ENDPOINT=simulator.url,
            AZURE_OPENAI_API_KEY=sim_key,
            AZURE_OPENAI_AUTH="key",
            AZURE_OPENAI_DEPLOYMENT=env.get("AZURE_OPENAI_DEPLOYMENT") or "gpt-image-1-mini",
            IMAGES_DEPLOYMENTS=env.get("IMAGES_DEPLOYMENTS") or SIMULATED_DEPLOYMENTS,
            IMAGES_ALLOW_HTTP_UPSTREAM="true",
        )
    if azurite is not None:
        env["AzureWebJobsStorage"] = azurite.connection_string
    return env


@contextlib.contextmanager
def running_stack(api_port: int = 0, latency: float = 0.5, location: Path | None = None) -> Iterator[Stack]:
    """Start whatever stand-ins are needed, then the API (and the queue runner); stop all on exit."""
    use_simulator = not os.environ.get("AZURE_OPENAI_ENDPOINT")
    use_azurite = not os.environ.get("AzureWebJobsStorage") and not os.environ.get("AzureWebJobsStorage__blobServiceUri")
    # Azurite's usual ports when they are free, so Storage Explorer and `az storage` find it.
    usual = (10000, 10001) if _port_free(10000) and _port_free(10001) else None
    azurite = start_azurite(location or ROOT / ".azurite", ports=usual) if use_azurite else None
    simulator = None
    pool_servers: list[ServerThread] = []
    pool_env: dict[str, str] = {}
    sim_key = secrets.token_urlsafe(24)
    try:
        if use_simulator:
            simulator = serve_in_thread(create_simulator(SimulatorConfig(api_keys={sim_key}, latency=latency)))
            pool_servers, pool_env = stack_pool(sim_key, latency)  # IMAGES_SIM_POOL=N: gpt-image-2 is a pool of N simulators
        env = stack_env(azurite, simulator, sim_key) | (pool_env if use_simulator else {})
        settings = Settings.from_env(env)
        # uvicorn's lifespan opens and closes the API's runtime in the server's event loop.
        api = serve_in_thread(create_app(Runtime(settings)), port=api_port)
        stack = Stack(settings, api, env, azurite, simulator)
        if settings.storage.connection_string:
            # The queue trigger's stand-in runs in an event loop of its own, so it gets a runtime of its own,
            # opened by its first message and closed when the runner stops.
            runner = Runtime(settings)
            stack.extras.append(
                QueueRunner(
                    settings.storage.connection_string, settings.queue_name, runner.handle_queue_message,
                    host_queues=host_queue_settings(), max_poll_interval=1.0, on_stop=runner.close,
                ).start_in_thread()
            )
        try:
            yield stack
        finally:
            for extra in reversed(stack.extras):
                extra.stop()
            api.stop()
    finally:
        if simulator is not None:
            simulator.stop()
            for server in pool_servers:
                server.stop()
        if azurite is not None:
            azurite.stop()


def demo(stack: Stack, out_dir: Path) -> dict[str, Any]:
    """Generate one image through the HTTP API, check the archive, save the image; return what was found."""
    deployment = stack.settings.default_deployment or sorted(stack.settings.deployments)[0]
    url = f"{stack.url}/openai/deployments/{deployment}/images/generations?api-version={stack.settings.api_version}"
    body = {"prompt": DEMO_PROMPT, "size": "1024x1024", "quality": "hd", "style": "vivid"}
    print(f"POST {url}\n     {json.dumps(body)}")
    started = time.monotonic()
    response = httpx.post(url, json=body, timeout=300)
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        raise SystemExit(f"generation failed: HTTP {response.status_code} {response.text}")
    item = response.json()["data"][0]
    link = item["url"]
    image = httpx.get(link, timeout=60)
    image.raise_for_status()
    blob_path = httpx.URL(link).path  # /<account>/<container>/<name>
    name = blob_path.split(f"/{stack.settings.images_container}/", 1)[1]
    record_name = name.rsplit("/", 1)[0] + "/record.json"
    record = httpx.get(f"{stack.url}/images/{record_name}", follow_redirects=True, timeout=60).json()
    archived = next(i for i in record["images"] if i["name"] == name)
    if archived["sha256"] != hashlib.sha256(image.content).hexdigest():
        raise SystemExit("archived bytes do not match the record's sha256")
    out_dir.mkdir(parents=True, exist_ok=True)
    extension = "png" if image.headers.get("content-type") == "image/png" else "jpg"
    saved = out_dir / f"{record['id']}.{extension}"
    saved.write_bytes(image.content)
    print(f"HTTP 200 in {elapsed:.1f} s")
    print(f"archived image : container '{stack.settings.images_container}', blob '{name}' ({archived['bytes']} bytes, sha256 {archived['sha256'][:16]}...)")
    print(f"its record     : container '{stack.settings.images_container}', blob '{record_name}'")
    print(f"  model {record['model']} via deployment {record['deployment']}; translations: {'; '.join(record['translations']) or 'none'}")
    print(f"read-only link : {link.split('?', 1)[0]}?<SAS, valid {stack.settings.link_ttl_seconds // 3600} h>")
    print(f"stable link    : {stack.url}/images/{name}")
    print(f"saved to       : {saved}")
    return {"name": name, "record": record, "saved": saved}


def demo_job(stack: Stack) -> dict[str, Any]:
    """Submit one background generation, poll its operation until it ends, and print the result."""
    deployment = stack.settings.default_deployment or sorted(stack.settings.deployments)[0]
    url = f"{stack.url}/openai/deployments/{deployment}/images/generations:submit?api-version={stack.settings.api_version}"
    body = {"prompt": "A lighthouse in a storm, oil painting", "size": "1536x1024", "quality": "medium"}
    print(f"\nPOST {url}\n     {json.dumps(body)}")
    accepted = httpx.post(url, json=body, timeout=60)
    if accepted.status_code != 202:
        raise SystemExit(f"submission failed: HTTP {accepted.status_code} {accepted.text}")
    location = accepted.headers["Operation-Location"]
    print(f"HTTP 202 {accepted.json()}  Operation-Location: {location}")
    deadline = time.monotonic() + 300
    while True:
        view = httpx.get(location, timeout=30).json()
        if view["status"] in ("succeeded", "failed"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"job {view['id']} still {view['status']} after 300 s")
        time.sleep(0.5)
    if view["status"] != "succeeded":
        raise SystemExit(f"job {view['id']} failed: {view.get('error')}")
    link = view["result"]["data"][0]["url"]
    image = httpx.get(link, timeout=60)
    image.raise_for_status()
    name = httpx.URL(link).path.split(f"/{stack.settings.images_container}/", 1)[1]
    print(f"job {view['id']}: {view['status']} ({len(image.content)} bytes)")
    print(f"archived image : container '{stack.settings.images_container}', blob '{name}'")
    print(f"job record     : container '{stack.settings.jobs_container}', blob '{view['id']}.json'")
    return view


def _run(args: argparse.Namespace) -> int:
    with running_stack(latency=args.latency) as stack:
        print(f"local stack up: API {stack.url}, storage {'Azurite' if stack.azurite else 'from AzureWebJobsStorage'}, "
              f"model {'simulator' if stack.simulator else stack.settings.endpoint}")
        demo(stack, Path(args.out))
        if stack.extras:
            demo_job(stack)
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not _port_free(args.port):
        raise SystemExit(f"port {args.port} is in use")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with running_stack(api_port=args.port, latency=args.latency) as stack:
        print(f"API        {stack.url}  (try: curl {stack.url}/healthz)")
        print(f"OpenAPI    {stack.url}/openapi.json")
        if stack.azurite:
            print(f"Storage    Azurite, data in {stack.azurite.location}")
            print(f"           AzureWebJobsStorage={stack.azurite.connection_string}")
        print(f"Model      {'simulator at ' + stack.simulator.url if stack.simulator else stack.settings.endpoint}")
        print(f"Queue      '{stack.settings.queue_name}' {'drained by the local queue runner' if stack.extras else '(no local runner: identity-based storage)'}")
        print("Ctrl-C or SIGTERM stops everything.", flush=True)
        stop.wait()
        print("stopping")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate one image through the local stack and show where it is archived")
    run.add_argument("--out", default=str(ROOT / "out"), help="folder for the saved image (default: out/)")
    run.add_argument("--latency", type=float, default=0.5, help="simulated model latency in seconds")
    serve = sub.add_parser("serve", help="serve the stack on 127.0.0.1 until Ctrl-C or SIGTERM")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--latency", type=float, default=2.0, help="simulated model latency in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redaction.install_log_hygiene()
    return _run(args) if args.command == "run" else _serve(args)


if __name__ == "__main__":
    sys.exit(main())
