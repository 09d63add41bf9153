"""The whole service on a laptop: Azurite, the images simulator, the API and the queue runner.

    python -m local.stack run     generate one image (and one background job), print where they are, stop
    python -m local.stack serve   serve on http://127.0.0.1:7071 until Ctrl-C or SIGTERM

With ``AZURE_OPENAI_ENDPOINT`` (and friends) set in the environment, the real model
service is used instead of the simulator (and said loudly: it is billed); with
``AzureWebJobsStorage`` set, that storage is used instead of Azurite. Azurite keeps its
data in ``.azurite/`` (``--data``) so what ``run`` archived is still there for ``serve``;
one Azurite serves a folder: a second stack on it reuses the first one's Azurite, or
refuses naming the stack that holds it (local/azurite.py). A stack on another stack's Azurite
drains queues of its own (``<IMAGES_QUEUE>-s<random>``, removed when it stops if empty): on
the shared queue the first stack's runner would take its jobs and run them against the first
stack's model service and settings.

Whatever ends it (Ctrl-C, SIGTERM, SIGHUP, an error), a stack stops everything it started;
settings are checked before anything starts, and a bad one ends in one line naming it.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from local.archived import fetch_archived
from local.azurite import ROOT, USUAL_PORTS, Azurite, FolderInUse, describe_holder, start_azurite
from local.demo_edit import demo_edit
from local.easyauth import IDENTITY_PREFIX, EasyAuthFront
from local.functions_worker import hosted
from local.identity import LOCAL_AUDIENCE, TOKEN_PATH, IdentityEndpoint, TokenIssuer
from local.queue_runner import QueueRunner
from local.servers import ServerThread, serve_in_thread
from local.sim_pool import stack_pool
from local.simulator import SimulatorConfig, create_simulator
from local.token import DEFAULT_PORT
from shared import redaction
from shared.callers import CALLER_ROLE, OPERATOR_ROLE
from shared.host import host_queue_settings
from shared.runtime import Runtime
from shared.settings import Settings, SettingsError

log = logging.getLogger("local.stack")

# The deployments the simulator serves locally, each named like its model family.
SIMULATED_DEPLOYMENTS = "gpt-image-1-mini=gpt-image-1-mini,gpt-image-1=gpt-image-1,gpt-image-1.5=gpt-image-1.5,gpt-image-2=gpt-image-2,dall-e-3=dall-e-3"
DEMO_PROMPT = "A multi-colored umbrella on the beach, disposable camera"
DEMO_PRINCIPAL = "local-developer"  # who `dev.py run` calls as (entra mode)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
AzuritePorts = Literal["usual", "free"]


class StackError(Exception):
    """Why the stack cannot start or go on, in one line for the person who ran it."""


class Stopped(Exception):  # a request, not an error
    """``run`` was asked to stop (SIGTERM, SIGINT, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Stack:
    """What is running, and the settings the app got."""

    settings: Settings
    api: ServerThread
    env: dict[str, str]
    azurite: Azurite | None = None
    simulator: ServerThread | None = None
    extras: list[Any] = field(default_factory=list)
    own_queue: bool = False  # a queue of its own on another stack's Azurite (removed when it stops, if empty)
    identity: IdentityEndpoint | None = None  # entra mode: the identity stand-in behind the front's /.auth/local/

    @property
    def url(self) -> str:
        return self.api.url

    def headers(self, principal: str = DEMO_PRINCIPAL, roles: tuple[str, ...] = (CALLER_ROLE,)) -> dict[str, str]:
        """What a caller sends: a bearer token for ``principal`` holding ``roles`` (entra mode); nothing in key mode."""
        if self.identity is None:
            return {}
        client_id, _ = self.identity.issuer.add_principal(principal, roles, LOCAL_AUDIENCE)
        token, _ = self.identity.issuer.issue(LOCAL_AUDIENCE, client_id, 3600)
        return {"Authorization": f"Bearer {token}"}

    def identity_env(self) -> dict[str, str]:
        """What App Service gives a process with a managed identity, here the stand-in's (azure-identity's
        ManagedIdentityCredential, and so DefaultAzureCredential, then gets tokens from it); empty in key mode."""
        if self.identity is None:
            return {}
        return {"IDENTITY_ENDPOINT": f"{self.url}{IDENTITY_PREFIX}{TOKEN_PATH}", "IDENTITY_HEADER": self.identity.header_secret}

    @property
    def owns_azurite(self) -> bool:
        """False when another stack's Azurite is reused (it keeps running after this one stops)."""
        return self.azurite is not None and self.azurite.process is not None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def uses_simulator(environ: Mapping[str, str]) -> bool:
    """True unless AZURE_OPENAI_ENDPOINT names a real model service."""
    return not environ.get("AZURE_OPENAI_ENDPOINT", "").strip()


def uses_azurite(environ: Mapping[str, str]) -> bool:
    """True unless AzureWebJobsStorage (in either form) names real storage."""
    return not any(environ.get(name, "").strip() for name in ("AzureWebJobsStorage", "AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__accountName"))


def billing_warning(environ: Mapping[str, str]) -> str | None:
    """The warning to print when the stack will call a real, billed model service; None for the simulator."""
    endpoint = environ.get("AZURE_OPENAI_ENDPOINT", "").strip()
    if not endpoint:
        return None
    bar = "!" * 100
    return (
        f"{bar}\n"
        f"!! AZURE_OPENAI_ENDPOINT is set in this shell: this stack calls {endpoint}, a REAL model service, not the simulator.\n"
        "!! Every image generated is BILLED to that resource. To use the simulator instead: unset AZURE_OPENAI_ENDPOINT\n"
        "!! (e.g. `env -u AZURE_OPENAI_ENDPOINT python3 dev.py run`).\n"
        f"{bar}"
    )


def stack_env(azurite: Azurite | None, simulator_url: str | None, sim_key: str) -> dict[str, str]:
    """Settings for the app: the real service from the environment, else the local stand-ins."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    if simulator_url is not None:
        env.update(
            AZURE_OPENAI_ENDPOINT=simulator_url,
            AZURE_OPENAI_API_KEY=sim_key,
            AZURE_OPENAI_AUTH="key",
            AZURE_OPENAI_DEPLOYMENT=env.get("AZURE_OPENAI_DEPLOYMENT") or "gpt-image-2",
            IMAGES_DEPLOYMENTS=env.get("IMAGES_DEPLOYMENTS") or SIMULATED_DEPLOYMENTS,
            IMAGES_ALLOW_HTTP_UPSTREAM="true",
        )
    if azurite is not None:
        env["AzureWebJobsStorage"] = azurite.connection_string
    # Callers as in Azure: entra mode, with the front (local/easyauth.py) standing in for App Service authentication.
    env["IMAGES_CALLER_AUTH"] = env.get("IMAGES_CALLER_AUTH") or "entra"
    if env["IMAGES_CALLER_AUTH"].lower() == "entra":
        env["WEBSITE_AUTH_ENABLED"] = "True"
    return env


def own_queue(environ: Mapping[str, str]) -> str:
    """The queue of a stack on another stack's Azurite: the configured name plus a suffix no other stack has."""
    base = (environ.get("IMAGES_QUEUE") or "image-jobs")[:48].rstrip("-")  # <name>-poison stays within 63
    return f"{base}-s{secrets.token_hex(3)}"


def _drop_own_queues(settings: Settings) -> None:
    """Remove a stack's own queue and its poison queue, unless a job still waits in one (then say which)."""
    for name in (settings.queue_name, settings.poison_queue_name):
        queue = QueueClient.from_connection_string(settings.storage.connection_string, name)
        try:
            waiting = queue.get_queue_properties().approximate_message_count
            if waiting:
                print(f"Queue      '{name}' keeps {waiting} message(s): IMAGES_QUEUE={settings.queue_name} python3 dev.py serve runs them", flush=True)
            else:
                queue.delete_queue()
        except AzureError:
            pass  # gone already, or Azurite went first
        finally:
            queue.close()


def check_settings() -> Settings:
    """The app's settings as the stack will give them, checked before anything starts (SettingsError names the bad one)."""
    azurite = Azurite(*USUAL_PORTS) if uses_azurite(os.environ) else None  # its connection string only: nothing runs
    simulator_url = "http://127.0.0.1:1" if uses_simulator(os.environ) else None
    return Settings.from_env(stack_env(azurite, simulator_url, "placeholder"))


def _azurite(data: Path, ports: AzuritePorts, command: str, die_with_parent: bool) -> Azurite:
    """This stack's Azurite on ``data``, or the one another stack runs there; StackError naming that stack if it cannot be used."""
    usual = USUAL_PORTS if ports == "usual" and all(_port_free(p) for p in USUAL_PORTS) else None
    try:
        return start_azurite(data, ports=usual, command=command, die_with_parent=die_with_parent)
    except FolderInUse as busy:
        if busy.answering():
            print(f"Azurite    reusing the one serving {data}, started by {describe_holder(busy.holder)}", flush=True)
            return busy.reuse()
        raise StackError(f"{busy}, and its Azurite does not answer; stop that stack first, or give this one another folder with --data DIR") from None


@contextlib.contextmanager
def running_stack(
    api_port: int = 0,
    latency: float = 0.5,
    location: Path | None = None,
    *,
    azurite_ports: AzuritePorts = "usual",
    command: str = "",
    die_with_parent: bool = False,
) -> Iterator[Stack]:
    """Start whatever stand-ins are needed, then the API (and the queue runner); stop all on exit, however it comes.

    Azurite's usual ports when they are free (``azurite_ports="usual"``), so Storage Explorer and
    `az storage` find it; ``die_with_parent``: Azurite goes even if this process is killed (Linux).
    """
    use_simulator, use_azurite = uses_simulator(os.environ), uses_azurite(os.environ)
    data = location or ROOT / ".azurite"
    azurite = _azurite(data, azurite_ports, command or " ".join(sys.argv), die_with_parent) if use_azurite else None
    simulator = None
    pool_servers: list[ServerThread] = []
    pool_env: dict[str, str] = {}
    sim_key = secrets.token_urlsafe(24)
    try:
        if use_simulator:
            simulator = serve_in_thread(create_simulator(SimulatorConfig(api_keys={sim_key}, latency=latency)))
            pool_servers, pool_env = stack_pool(sim_key, latency)  # IMAGES_SIM_POOL=N: gpt-image-2 is a pool of N simulators
        env = stack_env(azurite, simulator.url if simulator else None, sim_key) | (pool_env if use_simulator else {})
        shares = azurite is not None and azurite.process is None  # another stack's Azurite, and its queue runner
        if shares:
            env["IMAGES_QUEUE"] = own_queue(env)
            print(f"Queue      '{env['IMAGES_QUEUE']}', this stack's own: the stack holding the folder drains its own queue", flush=True)
        settings = Settings.from_env(env)
        identity = IdentityEndpoint(TokenIssuer(lifetime=3600)) if settings.caller_auth == "entra" else None
        # Served as the Functions worker serves it (local/functions_worker.py): the first request opens the
        # runtime in the server's event loop, stopping the server closes it. In entra mode the front that
        # stands in for App Service authentication is in front of it, as the platform is in Azure.
        app: Any = hosted(Runtime(settings))
        api = serve_in_thread(EasyAuthFront(app, identity, audiences=[LOCAL_AUDIENCE]) if identity else app, port=api_port)
        if azurite is not None and azurite.lock is not None:
            azurite.lock.describe(api=api.url, queue=settings.queue_name)
        stack = Stack(settings, api, env, azurite, simulator, own_queue=shares, identity=identity)
        try:
            if settings.storage.connection_string:
                stack.extras.append(_queue_runner(settings))
            yield stack
        finally:
            for extra in reversed(stack.extras):
                extra.stop()
            api.stop()
            if stack.own_queue:
                _drop_own_queues(settings)
    finally:
        if simulator is not None:
            simulator.stop()
            for server in pool_servers:
                server.stop()
        if azurite is not None:
            azurite.stop()


def _queue_runner(settings: Settings) -> Any:
    # The queue trigger's stand-in runs in an event loop of its own, so it gets a runtime of its own,
    # opened by its first message and closed when the runner stops.
    runner = Runtime(settings, warn_retired_models=False)  # the API runtime warned already
    return QueueRunner(
        settings.storage.connection_string, settings.queue_name, runner.handle_queue_message,
        host_queues=host_queue_settings(), max_poll_interval=1.0, on_stop=runner.close,
    ).start_in_thread()  # fmt: skip


def demo(stack: Stack, out_dir: Path) -> dict[str, Any]:
    """Generate one image through the HTTP API, check the archive, save the image; return what was found."""
    deployment = stack.settings.default_deployment or sorted(stack.settings.deployments)[0]
    url = f"{stack.url}/openai/deployments/{deployment}/images/generations?api-version={stack.settings.api_version}"
    body = {"prompt": DEMO_PROMPT, "size": "1024x1024", "quality": "hd", "style": "vivid"}
    print(f"POST {url}\n     {json.dumps(body)}")
    started = time.monotonic()
    response = httpx.post(url, json=body, headers=stack.headers(), timeout=300)
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        raise SystemExit(f"generation failed: HTTP {response.status_code} {response.text}")
    item = response.json()["data"][0]
    link = item["url"]
    found = fetch_archived(stack, link, out_dir)
    name, record_name, record, saved = found.name, found.record_name, found.record, found.saved
    archived = next(i for i in record["images"] if i["name"] == name)
    if archived["sha256"] != hashlib.sha256(found.data).hexdigest():
        raise SystemExit("archived bytes do not match the record's sha256")
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
    accepted = httpx.post(url, json=body, headers=stack.headers(), timeout=60)
    if accepted.status_code != 202:
        raise SystemExit(f"submission failed: HTTP {accepted.status_code} {accepted.text}")
    location = accepted.headers["Operation-Location"]
    print(f"HTTP 202 {accepted.json()}  Operation-Location: {location}")
    deadline = time.monotonic() + 300
    while True:
        view = httpx.get(location, headers=stack.headers(), timeout=30).json()
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


def _links_note(stack: Stack) -> str:
    kept = "" if stack.owns_azurite or stack.azurite is None else "; the images stay in the Azurite another stack runs"
    return (
        f"\nThese links answer only while this stack runs: `run` stops its API ({stack.url}) and"
        f"{' its Azurite' if stack.owns_azurite else ' its simulator'} when it ends{kept}.\n"
        "To keep a stack (and its links) up, start `python3 dev.py serve` and leave it running; "
        "`python3 dev.py run` beside it uses the same Azurite.\n"
        f"Gallery of what was generated (while a stack runs): {stack.url}/gallery"
        + ("" if stack.url.endswith(f":{DEFAULT_PORT}") else f"; with `serve`: http://127.0.0.1:{DEFAULT_PORT}/gallery")
        + ("" if stack.identity is None else f"\nThe stack knows callers as Azure does (entra mode): a browser signs in first, "
           f"{stack.url}/.auth/login/local?principal=me&roles={OPERATOR_ROLE}&post_login_redirect_uri=/gallery")
    )  # fmt: skip


def _stop_on_signals(handler: Callable[[int, Any], None]) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def _raise_stopped(signum: int, _: Any) -> None:
    # Once: a second signal must not cut the clean-up that the first one started.
    _stop_on_signals(lambda *_: None)
    raise Stopped(signum)


def _run(args: argparse.Namespace) -> int:
    _stop_on_signals(_raise_stopped)
    try:
        with running_stack(latency=args.latency, location=Path(args.data), azurite_ports=args.azurite_ports,
                           command="dev.py run", die_with_parent=True) as stack:  # fmt: skip
            model = "simulator" if stack.simulator else f"{stack.settings.endpoint} (real, billed)"
            storage = "Azurite" if stack.azurite else "from AzureWebJobsStorage"
            print(f"local stack up: API {stack.url}, storage {storage}, model {model}")
            demo_edit(stack, demo(stack, Path(args.out)), Path(args.out))
            if stack.extras:
                demo_job(stack)
            print(_links_note(stack))
    except Stopped as stopped:
        print(f"stopped by {stopped}: everything this stack started has stopped", file=sys.stderr)
        return 128 + stopped.signum
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not _port_free(args.port):
        raise StackError(f"port {args.port} is in use (another `dev.py serve`?); choose another with --port")
    stop = threading.Event()
    _stop_on_signals(lambda *_: stop.set())
    with running_stack(api_port=args.port, latency=args.latency, location=Path(args.data), azurite_ports=args.azurite_ports,
                       command="dev.py serve", die_with_parent=True) as stack:  # fmt: skip
        print(f"API        {stack.url}  (try: curl {stack.url}/healthz)")
        print(f"OpenAPI    {stack.url}/openapi.json")
        print(f"Gallery    {stack.url}/gallery  (what was generated, newest first)")
        if stack.identity is not None:
            print(f"           in a browser, sign in first: {stack.url}/.auth/login/local?principal=me&roles={OPERATOR_ROLE}&post_login_redirect_uri=/gallery")
        if stack.identity is not None:
            print(f"Callers    entra mode: a bearer token from `python3 dev.py token --principal NAME --roles {CALLER_ROLE}` (--url {stack.url});")
            print(f"           the front checks it as App Service authentication would (identity stand-in at {stack.url}{IDENTITY_PREFIX}/);")
            print(f"           DefaultAzureCredential with {' '.join(f'{k}={v}' for k, v in stack.identity_env().items())}")
            print(f"           and AZURE_CLIENT_ID (dev.py token prints it) gets tokens for scope {LOCAL_AUDIENCE}/.default")
        if stack.azurite:
            print(f"Storage    Azurite, data in {stack.azurite.location}")
            print(f"           AzureWebJobsStorage={stack.azurite.connection_string}")
        model = f"simulator at {stack.simulator.url}, deployments {', '.join(sorted(stack.settings.deployments))}" if stack.simulator else f"{stack.settings.endpoint} (real, billed)"
        print(f"Model      {model}")
        print(f"Queue      '{stack.settings.queue_name}' {'drained by the local queue runner' if stack.extras else '(no local runner: identity-based storage)'}")
        print("Ctrl-C or SIGTERM stops everything.", flush=True)
        stop.wait()
        print("stopping", flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate one image through the local stack and show where it is archived")
    run.add_argument("--out", default=str(ROOT / "out"), help="folder for the saved image (default: out/)")
    run.add_argument("--latency", type=float, default=0.5, help="simulated model latency in seconds (default 0.5)")
    serve = sub.add_parser("serve", help="serve the stack on 127.0.0.1 until Ctrl-C or SIGTERM")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the API's port (default {DEFAULT_PORT}, as `func start`)")
    serve.add_argument("--latency", type=float, default=2.0, help="simulated model latency in seconds (default 2)")
    for command in (run, serve):
        command.add_argument("--data", default=str(ROOT / ".azurite"), help="Azurite's data folder (default: .azurite/); one Azurite per folder")
        command.add_argument(
            "--azurite-ports", choices=["usual", "free"], default="usual",
            help="usual: 10000/10001 when free, so Storage Explorer and `az storage` find it; free: any free ports",
        )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redaction.install_log_hygiene()
    prog = f"dev.py {args.command}"
    warning = billing_warning(os.environ)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        check_settings()
        return _run(args) if args.command == "run" else _serve(args)
    except SettingsError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    except StackError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
