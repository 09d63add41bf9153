"""The batch client: hand a file of prompts to the service, watch it progress, find the images in a folder.

Never deployed with the app (.funcignore leaves it out). As a command::

    python -m client batch prompts.jsonl --endpoint URL --out DIR [--via http|queue] [--key KEY | --scope SCOPE]

As a library (async, with an ``httpx.AsyncClient`` whose base URL is the service)::

    operation = await submit(http, request)           # a BatchRequest, e.g. from parse_line()
    operation = await wait(http, operation.id, poll_interval=2)
    files = await download(http, operation, Path("out"))

    lines     the JSONL format, stable ids
    service   submit, status, wait, download
    queue     --via queue: messages as the Functions host expects them
    batch     a whole file: concurrency, resumability, results.jsonl
    progress  counts per state, throughput; rich on a terminal, plain lines otherwise
    auth      function key or Entra ID
    cli       the command line
"""

from __future__ import annotations

from client.batch import BatchConfig, LineResult, run_batch
from client.lines import BatchRequest, InvalidLine, derive_id, parse_line
from client.service import JobError, Operation, download, status, submit, wait

__all__ = [
    "BatchConfig",
    "BatchRequest",
    "InvalidLine",
    "JobError",
    "LineResult",
    "Operation",
    "derive_id",
    "download",
    "parse_line",
    "run_batch",
    "status",
    "submit",
    "wait",
]
