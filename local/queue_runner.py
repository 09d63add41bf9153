"""Runs the queue handler against Azurite with the Functions host's semantics.

What the host does for a storage-queue trigger, and this runner copies
(https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger):

- fetches up to ``batchSize`` messages, runs them concurrently, and fetches
  more when fewer than ``newBatchThreshold`` are still running;
- keeps a message invisible while its function runs (renewing the lease);
- deletes the message when the function returns;
- when the function raises, makes the message visible again after
  ``visibilityTimeout``; once ``dequeueCount`` reached ``maxDequeueCount`` it
  moves the message to ``<queue>-poison`` instead;
- with ``messageEncoding: none`` hands the text over as is (base64 otherwise);
- a crash (the worker dies) leaves the message to reappear when its lease ends.

The handler gets a real ``azure.functions.QueueMessage``, as in Azure.

Tests wait on what the runner did, never on the clock: ``wait_for(predicate)``
returns as soon as the runner's stats satisfy it, ``drain()`` once every message
is handled. ``crash_visibility`` stands in for the time a dead worker's lease takes
to run out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerMessage  # what the worker builds for a queueTrigger
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

log = logging.getLogger(__name__)

Handler = Callable[[func.QueueMessage], Awaitable[Any]]



class SimulatedCrash(BaseException):
    """Raised by a test hook: the worker 'dies' and the message is left as it is."""


def parse_timespan(value: str) -> float:
    """host.json timespans ("00:00:30") in seconds."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", value)
    if not match:
        raise ValueError(f"not a timespan: {value!r}")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass
class RunnerStats:
    """What the runner has done so far (read it through ``QueueRunner.wait_for``)."""

    received: int = 0
    succeeded: int = 0
    retried: int = 0
    poisoned: int = 0
    crashed: int = 0
    outcomes: list[Any] = field(default_factory=list)  # what the handler returned, in order
    idle: bool = False  # at the last poll nothing was running and the queue held no message, visible or not


class QueueRunner:
    """Drives ``handler`` from a queue, like the Functions host would."""

    def __init__(
        self,
        connection_string: str,
        queue_name: str,
        handler: Handler,
        *,
        host_queues: dict[str, Any] | None = None,
        retry_delay: float | None = None,
        lease_seconds: float = 60.0,
        max_poll_interval: float | None = None,
        on_stop: Callable[[], Awaitable[Any]] | None = None,
        crash_visibility: float | None = None,
    ) -> None:
        settings = host_queues or {}
        self.connection_string = connection_string
        self.queue_name = queue_name
        self.handler = handler
        self.batch_size = int(settings.get("batchSize", 16))
        self.new_batch_threshold = int(settings.get("newBatchThreshold", self.batch_size // 2))
        self.max_dequeue_count = int(settings.get("maxDequeueCount", 5))
        self.retry_delay = retry_delay if retry_delay is not None else parse_timespan(settings.get("visibilityTimeout", "00:00:00"))
        self.max_poll_interval = max_poll_interval if max_poll_interval is not None else parse_timespan(settings.get("maxPollingInterval", "00:01:00"))
        self.base64 = settings.get("messageEncoding", "base64") != "none"
        self.lease_seconds = lease_seconds
        self.on_stop = on_stop  # e.g. close the handler's clients, in the runner's own loop
        # After a simulated crash the message reappears when the dead worker's lease runs out
        # (None), or after this many seconds: tests move time on instead of waiting for it.
        self.crash_visibility = crash_visibility
        self.stats = RunnerStats()
        self._changed = threading.Condition()
        self._stop = asyncio.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Poll until stop() is called."""
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        queue = QueueClient.from_connection_string(self.connection_string, self.queue_name)
        poison = QueueClient.from_connection_string(self.connection_string, f"{self.queue_name}-poison")
        for client in (queue, poison):
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
        running: set[asyncio.Task[None]] = set()
        interval = 0.05
        try:
            while not self._stop.is_set():
                free = self.batch_size + self.new_batch_threshold - len(running)
                if len(running) > self.new_batch_threshold or free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED, timeout=0.5)
                    continue
                batch = [m async for m in queue.receive_messages(max_messages=min(self.batch_size, free), visibility_timeout=int(self.lease_seconds))]
                if not batch:
                    if not running:
                        await self._note_idle(queue)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), interval)
                    interval = min(self.max_poll_interval, interval * 2)  # the host backs off the same way
                    continue
                interval = 0.05
                for message in batch:
                    with self._update() as stats:
                        stats.received += 1
                        stats.idle = False
                    task = asyncio.create_task(self._process(queue, poison, message))
                    running.add(task)
                    task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running, timeout=30)
        finally:
            for task in running:
                task.cancel()
            await queue.close()
            await poison.close()
            if self.on_stop is not None:
                await self.on_stop()

    async def _process(self, queue: QueueClient, poison: QueueClient, message: QueueMessage) -> None:
        text = message.content if isinstance(message.content, str) else bytes(message.content).decode()
        try:
            body = base64.b64decode(text) if self.base64 else text.encode()
        except ValueError:
            log.error("message %s is not base64 but the host expects base64; moved to poison", message.id)
            await self._poison(queue, poison, message, text)
            return
        msg = TriggerMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        receipt = {"pop": message.pop_receipt}
        handled = asyncio.Event()
        renewer = asyncio.create_task(self._renew(queue, message, receipt, handled))

        async def renewed() -> None:
            """Stop renewing and wait for it: a renewal already sent changes the pop receipt, which what follows needs."""
            handled.set()
            await renewer

        try:
            outcome = await self.handler(msg)
        except SimulatedCrash:
            await renewed()
            log.warning("message %s: worker crashed (simulated); it reappears when its lease ends", message.id)
            if self.crash_visibility is not None:
                async with self._owned(message):
                    await queue.update_message(message.id, receipt["pop"], visibility_timeout=int(self.crash_visibility))
            with self._update() as stats:
                stats.crashed += 1
            return
        except Exception as exc:  # the host catches everything a function raises
            await renewed()
            if (message.dequeue_count or 0) >= self.max_dequeue_count:
                log.warning("message %s failed on dequeue %s: moved to poison (%s)", message.id, message.dequeue_count, exc)
                await self._poison(queue, poison, message, text, receipt["pop"])
            else:
                async with self._owned(message):
                    await queue.update_message(message.id, receipt["pop"], visibility_timeout=int(self.retry_delay))
                with self._update() as stats:
                    stats.retried += 1
            return
        finally:
            await renewed()
        async with self._owned(message):
            await queue.delete_message(message.id, receipt["pop"])
        with self._update() as stats:
            stats.succeeded += 1
            stats.outcomes.append(outcome)

    async def _renew(self, queue: QueueClient, message: QueueMessage, receipt: dict[str, str | None], handled: asyncio.Event) -> None:
        """Keep the message invisible while the handler runs, as the host does: every third of the lease, so one
        slow renewal still lands before the lease ends; until ``handled`` is set."""
        while not handled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handled.wait(), self.lease_seconds / 3)
                return
            async with self._owned(message):
                updated = await queue.update_message(message.id, receipt["pop"], visibility_timeout=int(self.lease_seconds))
                receipt["pop"] = updated.pop_receipt
                continue
            return

    @contextlib.asynccontextmanager
    async def _owned(self, message: QueueMessage) -> AsyncIterator[None]:
        """A call on a message this delivery may no longer hold: gone (deleted), or delivered again after its lease
        ran out (another pop receipt). The host logs that and goes on; so does the runner."""
        try:
            yield
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "PopReceiptMismatch":  # set by the storage SDK
                raise
            log.warning("message %s: its lease ran out and it was delivered again; this delivery lets it go", message.id)

    async def _poison(self, queue: QueueClient, poison: QueueClient, message: QueueMessage, text: str, pop: str | None = None) -> None:
        await poison.send_message(text)
        async with self._owned(message):
            await queue.delete_message(message.id, pop or message.pop_receipt)
        with self._update() as stats:
            stats.poisoned += 1

    async def _note_idle(self, queue: QueueClient) -> None:
        # The approximate count includes invisible messages (deferred, or waiting for a retry).
        count = (await queue.get_queue_properties()).approximate_message_count
        with self._update() as stats:
            stats.idle = count == 0

    @contextlib.contextmanager
    def _update(self) -> Iterator[RunnerStats]:
        """Change the stats under the lock, then wake whoever waits on them."""
        with self._changed:
            yield self.stats
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[RunnerStats], bool], timeout: float = 60) -> RunnerStats:
        """Block until ``predicate(stats)`` holds (checked on every change); TimeoutError after ``timeout`` s."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.stats), timeout):
                raise TimeoutError(f"queue runner {self.queue_name}: condition not met within {timeout} s; {self.stats}")
        return self.stats

    def drain(self, received: int = 0, timeout: float = 60) -> RunnerStats:
        """Block until the runner has taken at least ``received`` messages and then found nothing left to do:
        nothing running and no message in the queue, visible or not (a deferred job still counts)."""
        return self.wait_for(lambda s: s.idle and s.received >= received, timeout)

    def stop(self, timeout: float = 30) -> None:
        """Stop polling, let running handlers finish (up to 30 s), and join the thread if there is one."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def start_in_thread(self) -> QueueRunner:
        """Run in a background thread with its own event loop (as the host's worker has)."""
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            started.set()
            await self.run()

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name=f"queue-runner-{self.queue_name}", daemon=True)
        self._thread.start()
        started.wait(10)
        return self


