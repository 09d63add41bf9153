"""One upstream client per backend, opened with the runtime's other clients.

Each backend's client is the ordinary :class:`~shared.upstream.UpstreamClient`, given a view
of the settings with the backend's endpoint, API style and auth (``settings.model_copy``): the
client itself knows nothing of pools. In a pool of several backends the view has
``max_retries=0``, so a 429 or a 5xx comes straight back to the router, which sends the call
elsewhere instead of waiting on the same backend. Every backend's client shares the single-endpoint
client's limiter (``IMAGES_MAX_CONCURRENT_UPSTREAM`` caps the instance, all backends together).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from azure.storage.blob.aio import BlobServiceClient

from shared import credentials
from shared.pool.config import Backend
from shared.pool.router import Pool, Pools, Slot
from shared.pool.throttle import ThrottleBoard
from shared.settings import Settings
from shared.upstream import UpstreamClient


def backend_settings(settings: Settings, backend: Backend, *, alone: bool) -> Settings:
    """The settings as the backend's client reads them: its endpoint, key or secret, API style and auth way."""
    update: dict[str, Any] = {"endpoint": backend.endpoint, "default_deployment": backend.deployment}
    if backend.api_key:
        update["api_key"] = backend.api_key
    if backend.key_secret_name:
        update["key_secret_name"] = backend.key_secret_name
    if backend.key_vault_url:
        update["key_vault_url"] = backend.key_vault_url
    if not alone:
        update["max_retries"] = 0  # the router fails over instead
    view = settings.model_copy(update=update)
    # The resolved values are private attributes (model_copy keeps them): set the backend's own.
    view._api_style = backend.api_style or ("openai" if urlsplit(backend.endpoint).hostname == "api.openai.com" else "deployment")
    view._auth_mode = backend.auth or settings.auth_mode
    return view


async def open_pools(
    settings: Settings,
    stack: AsyncExitStack,
    default: UpstreamClient,
    *,
    http: httpx.AsyncClient,
    blobs: BlobServiceClient,
    credential: AsyncTokenCredential | None,
    key_vault_options: Mapping[str, Any] | None = None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: random.Random | None = None,
) -> Pools:
    """Every pool of ``settings.backends`` with a client per backend (their auth closed with ``stack``).

    ``clock`` (epoch seconds), ``sleep`` and ``rng`` are for tests: time moved instead of waited.
    """
    if not settings.backends:
        return Pools(default)
    board_options: dict[str, Any] = {"clock": clock} if clock else {}
    board = ThrottleBoard(blobs.get_container_client(settings.jobs_container), **board_options)
    pools: dict[str, Pool] = {}
    for name, backends in settings.backends.items():
        slots = []
        for backend in backends:
            view = backend_settings(settings, backend, alone=len(backends) == 1)
            auth = credentials.create_upstream_auth(view, credential, key_vault_options=key_vault_options)
            stack.push_async_callback(auth.close)
            slots.append(Slot(backend, UpstreamClient(view, auth, http, limiter=default.limiter)))
        options: dict[str, Any] = {"rng": rng} | ({"sleep": sleep} if sleep else {})
        pools[name] = Pool(name, slots, board, **options)
    return Pools(default, pools)
