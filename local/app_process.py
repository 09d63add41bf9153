"""The app alone in a process of its own: the HTTP API and the queue runner, from environment settings.

    python -m local.app_process [--host 127.0.0.1] [--port 7071] [--lease-seconds 60]

Unlike ``python -m local.stack serve`` it starts no Azurite and no simulator: storage
(``AzureWebJobsStorage``, a connection string) and the model (``AZURE_OPENAI_*``) live
elsewhere and outlive it. That is what a crash test needs: kill this process with
SIGKILL, keep storage running, start it again, and see what became of the jobs.

Prints ``ready <url>`` on stdout once the API accepts connections and the runner polls,
then ``job <id> <action>`` for each delivery it handled (succeeded, failed, deferred, busy,
duplicate, invalid), so a watcher waits on those lines instead of polling; SIGTERM or SIGINT
stop it cleanly. ``--lease-seconds`` is how long a message it took stays
invisible without renewal, so after a kill the next process sees it again that much later.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from local.functions_worker import hosted
from local.queue_runner import QueueRunner
from local.servers import serve_in_thread
from shared.host import host_queue_settings
from shared.jobs import Outcome
from shared.runtime import Runtime


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; exit 2 when the settings name no connection string for the runner."""
    parser = argparse.ArgumentParser(prog="python -m local.app_process", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--lease-seconds", type=float, default=60.0, help="message invisibility while a handler runs (renewed at half)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    api_runtime = Runtime.from_env()  # settings checked (a bad one stops here, named), log hygiene installed
    settings = api_runtime.settings
    if not settings.storage.connection_string:
        print("local.app_process needs AzureWebJobsStorage as a connection string (the local queue runner reads with it)", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    api = serve_in_thread(hosted(api_runtime), host=args.host, port=args.port)
    # The runner's event loop is its own, so it gets a runtime of its own (as in local.stack).
    runner_runtime = Runtime(settings, warn_retired_models=False)  # the API runtime warned already

    async def handle(msg: Any) -> Outcome:
        outcome = await runner_runtime.handle_queue_message(msg)
        print(f"job {outcome.job_id} {outcome.action}", flush=True)
        return outcome

    runner = QueueRunner(
        settings.storage.connection_string,
        settings.queue_name,
        handle,
        host_queues=host_queue_settings(),
        lease_seconds=args.lease_seconds,
        on_stop=runner_runtime.close,
    ).start_in_thread()
    print(f"ready {api.url}", flush=True)
    stop.wait()
    runner.stop()
    api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
