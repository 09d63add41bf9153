"""The composition root: every client and credential of one app instance, opened and closed together.

``function_app.py``, the local stack, the benchmark's server and the tests all build the
app through :class:`Runtime`, so the wiring (settings, log hygiene, service, jobs) is
written once. Creating a Runtime does no I/O; ``async with runtime`` (or ``open()``)
opens the clients inside the running event loop and ``close()`` closes every one of them.

The clients (aiohttp sessions, httpx pools) belong to the event loop that opened them,
so a runtime serves one loop at a time: the Functions worker has one; the local stack
and the tests, which run the API and the queue runner in loops of their own, build one
runtime per loop. Options for the clients (a test CA, a short storage retry policy, a
request hook that simulates a crash) are given to the constructor, never patched in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared import credentials, redaction, telemetry
from shared.archive import Archive
from shared.callers.books import Books
from shared.callers.budgets import Budgets
from shared.callers.ledger import Ledger
from shared.callers.scope import ScopeKey
from shared.index import RecordIndex
from shared.jobs import Jobs, Outcome, QueueMessageLike, handle_queue_message
from shared.models import retired_warnings
from shared.pool.clients import open_pools
from shared.service import Clients, ImageService
from shared.settings import Settings
from shared.upstream import UpstreamClient
from shared.upstream.client import upstream_http

# The SDK default (10 retries, exponential from 15 s) keeps a caller waiting minutes when
# storage is down; a few quick retries cover blips, and then the caller hears 503 (and the
# queue redelivers) instead. These are the storage clients' keyword arguments.
STORAGE_RETRY: dict[str, Any] = {"initial_backoff": 0.3, "increment_base": 1.6, "random_jitter_range": 0.3, "retry_total": 3, "connection_timeout": 10}
# A blob over 8 MiB (an edit's input of up to 50 MB) goes up in 4 MiB blocks, not in one Put Blob: a 40 MB
# body handed to the event loop's transport at once stalls every other request for tens of milliseconds.
# Archived images (a few MB) still go in one call.
STORAGE_TRANSFER: dict[str, Any] = {"max_single_put_size": 8 * 1024 * 1024, "max_block_size": 4 * 1024 * 1024}


def storage_client_options() -> dict[str, Any]:
    """The storage clients' keyword arguments: :data:`STORAGE_RETRY`, :data:`STORAGE_TRANSFER`, and the environment read only when it says something.

    With ``use_env_settings`` (the SDK's default) aiohttp looks up proxies and ``~/.netrc`` for every
    request, the netrc in a worker thread: a thread hop per blob written, for a file whose credentials
    storage requests never use (the SDK signs them; aiohttp refuses a request with both). So the
    environment is read only when a proxy is configured there (``HTTPS_PROXY`` and friends), and then
    wholly, as the SDK does by default."""
    proxies = {scheme for scheme in urllib.request.getproxies_environment() if scheme != "no"}  # NO_PROXY alone names no proxy
    return {**STORAGE_RETRY, **STORAGE_TRANSFER, "use_env_settings": bool(proxies)}


log = logging.getLogger(__name__)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def open_clients(
    settings: Settings, stack: AsyncExitStack, *, storage_options: Mapping[str, Any], key_vault_options: Mapping[str, Any] | None
) -> Clients:
    """Create and open every client and credential, each pushed on ``stack`` (closed in reverse order)."""
    s = settings
    # AzureWebJobsStorage__clientId may name another user-assigned identity than AZURE_CLIENT_ID.
    own_storage_identity = s.storage.uses_identity and bool(s.storage.client_id) and s.storage.client_id != s.client_id
    credential = None
    if s.auth_mode in ("keyvault", "entra") or (s.storage.uses_identity and not own_storage_identity):
        # One credential shared by storage, Key Vault and the model token: azure-identity caches per credential.
        credential = await stack.enter_async_context(credentials.create_token_credential(s))
    options = {**storage_client_options(), **storage_options}
    if s.storage.connection_string:
        blobs = BlobServiceClient.from_connection_string(s.storage.connection_string, **options)
        queues = QueueServiceClient.from_connection_string(s.storage.connection_string, **options)
    else:
        storage_credential = credential
        if own_storage_identity:
            storage_credential = await stack.enter_async_context(credentials.create_token_credential(s, client_id=s.storage.client_id))
        blobs = BlobServiceClient(s.storage.blob_url, credential=storage_credential, **options)
        queues = QueueServiceClient(s.storage.queue_url, credential=storage_credential, **options)
    await stack.enter_async_context(blobs)
    await stack.enter_async_context(queues)
    auth = credentials.create_upstream_auth(s, credential, key_vault_options=key_vault_options)
    stack.push_async_callback(auth.close)
    http = await stack.enter_async_context(upstream_http(s))
    telemetry.instrument_httpx(http)
    upstream = UpstreamClient(s, auth, http)
    pools = await open_pools(s, stack, upstream, http=http, blobs=blobs, credential=credential, key_vault_options=key_vault_options)
    return Clients(upstream=upstream, blobs=blobs, queues=queues, archive=Archive(s, blobs), scope=ScopeKey(blobs), books=open_books(s, blobs), pools=pools)


def open_books(settings: Settings, blobs: BlobServiceClient) -> Books:
    """The callers' budgets (a ledger only when some caller has a limit) and the index, both in the jobs container."""
    jobs = blobs.get_container_client(settings.jobs_container)
    return Books(Budgets(settings.caller_limits, Ledger(jobs)), RecordIndex(jobs))


def warn_retired(settings: Settings, today: dt.date) -> None:
    """One warning for each deployment whose family Azure retired; none for a plain-http endpoint, which
    only the local simulator is (IMAGES_ALLOW_HTTP_UPSTREAM): its models are not Azure's to retire."""
    if settings.endpoint.startswith("http://"):
        return
    for _deployment, warning in retired_warnings(settings.deployments, today):
        log.warning(warning)


class Runtime:
    """One app instance: settings, the generation service and the jobs, sharing their clients."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage_options: Mapping[str, Any] | None = None,
        key_vault_options: Mapping[str, Any] | None = None,
        today: Callable[[], dt.date] = utc_today,
        jobs: Callable[[ImageService], Jobs] | None = None,
        warn_retired_models: bool = True,
    ) -> None:
        """``storage_options`` go to the Blob and Queue clients (over :func:`storage_client_options`), e.g.
        ``connection_verify`` (a CA file), ``retry_total``, ``raw_request_hook``; ``key_vault_options``
        to the Key Vault client. ``today`` is the day the models' lifecycle is judged on (tests pass any);
        ``jobs`` builds the Jobs over the service (tests give a job store or a clock of their own);
        ``warn_retired_models`` False for a second runtime of one start (the queue runner beside the API),
        so each retired deployment is warned about once per start."""
        self.settings = settings
        telemetry.setup(exporter=settings.telemetry_exporter, prompts=settings.telemetry_prompts)  # once per process: the first runtime decides
        self.today = today
        if warn_retired_models:
            warn_retired(settings, today())
        self.service = ImageService(settings)
        self.jobs = jobs(self.service) if jobs else Jobs(self.service, max_dequeue_count=settings.max_dequeue_count)
        self._storage_options = dict(storage_options or {})
        self._key_vault_options = dict(key_vault_options) if key_vault_options else None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Runtime:
        """The process's runtime: settings read and checked (a bad one raises, naming it), secrets kept
        out of every log line, nothing opened yet."""
        settings = Settings.from_env(environ)
        redaction.install_log_hygiene()
        telemetry.redact_exported_logs()  # OpenTelemetry's log handler exports the exception itself: redact that too
        telemetry.redact_request_urls()  # the worker's FastAPI app (HTTP streams) records request URLs, ?code= included
        return cls(settings, **options)

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._stack is not None

    async def open(self) -> Runtime:
        """Open every client in the running event loop. Idempotent: later and concurrent calls wait for the first."""
        loop = asyncio.get_running_loop()
        if self._stack is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._stack is None:
                    await self._open(loop)
        if self._loop is not loop:
            raise RuntimeError("this runtime's clients belong to another event loop: build one Runtime per loop")
        return self

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        stack = AsyncExitStack()
        try:
            clients = await open_clients(
                self.settings, stack, storage_options=self._storage_options, key_vault_options=self._key_vault_options
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._loop = stack, loop
        self.service.attach(clients)

    async def close(self) -> None:
        """Close every client and credential this runtime opened, each even if another fails; open() may follow."""
        stack, self._stack, self._loop, self._lock = self._stack, None, None, None
        self.service.attach(None)
        if stack is not None:
            await stack.aclose()

    async def handle_queue_message(self, msg: QueueMessageLike) -> Outcome:
        """The queue trigger's body: open the runtime (the first message may come before any HTTP request), run the job."""
        await self.open()
        return await handle_queue_message(self.jobs, msg)

    async def __aenter__(self) -> Runtime:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
