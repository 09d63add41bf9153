"""The composition root: every client and credential of one app instance, opened and closed together.

``function_app.py``, the local stack, the benchmark's server and the tests all build the
app through :class:`Runtime`, so the wiring (settings, log hygiene, service, jobs) is
written once. Creating a Runtime does no I/O; ``async with runtime`` (or ``open()``)
opens the clients inside the running event loop and ``close()`` closes every one of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from shared.jobs import Jobs
from shared.models import retired_warnings
from shared.service import ImageService
from shared.settings import Settings

log = logging.getLogger(__name__)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class Runtime:
    """One app instance: settings, the generation service and the jobs, sharing their clients."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage_options: dict[str, Any] | None = None,
        key_vault_options: dict[str, Any] | None = None,
        today: Callable[[], dt.date] = utc_today,
    ) -> None:
        self.settings = settings
        self.today = today  # the model lifecycle is judged on this day (tests pass any)
        for warning in retired_warnings(settings.deployments, today()):
            log.warning(warning)
        self.service = ImageService(settings, storage_options=storage_options, key_vault_options=key_vault_options)
        self.jobs = Jobs(self.service, max_dequeue_count=settings.max_dequeue_count)

    async def open(self) -> Runtime:
        """Open the clients (idempotent)."""
        return self

    async def close(self) -> None:
        """Close every client and credential this runtime opened."""
        await self.service.close()

    async def __aenter__(self) -> Runtime:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
