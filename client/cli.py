"""``python -m client batch prompts.jsonl --endpoint URL --out DIR``: the command line of the batch client.

Exit status: 0 when every line succeeded (or was done by an earlier run), 1 when any line
failed, was invalid (a repeated id included) or changed under an id an earlier run sent, 2 for a
usage error, 130 when interrupted (run it again to carry on).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from azure.identity.aio import DefaultAzureCredential
from rich.console import Console

from client.auth import FunctionKeyAuth, entra_auth, static_token
from client.batch import BatchConfig, failed, run_batch
from client.progress import reporter_for
from client.queue import DEFAULT_QUEUE, QueueSubmitter
from client.service import API_VERSION


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    root = argparse.ArgumentParser(prog="python -m client", description="Batch client of the image generation service.")
    commands = root.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("batch", help="run every line of a JSONL file as a background job and download the images")
    batch.add_argument("file", type=Path, help='one JSON request per line: {"prompt": ..., "deployment"?: ..., "id"?: ..., other parameters}')
    batch.add_argument("--endpoint", required=True, help="the service, e.g. https://<app>.azurewebsites.net or http://127.0.0.1:7071")
    batch.add_argument("--out", required=True, type=Path, help="folder for the images and results.jsonl")
    batch.add_argument("--via", choices=("http", "queue"), default="http", help="submit through the HTTP :submit route (default) or straight onto the queue")
    batch.add_argument("--deployment", help="deployment for lines that name none")
    batch.add_argument("--key", default=os.environ.get("IMAGES_FUNCTION_KEY"), help="function key (default: $IMAGES_FUNCTION_KEY); without one, Entra ID when --scope is given")
    batch.add_argument("--scope", help="Entra ID scope of the function app, e.g. api://<tenant id>/images-<token>/.default (DefaultAzureCredential)")
    batch.add_argument("--token", default=os.environ.get("IMAGES_TOKEN"), help="a bearer token as it is (default: $IMAGES_TOKEN), e.g. from `python3 dev.py token` for the local stack")
    batch.add_argument("--connection-string", default=os.environ.get("AZURE_STORAGE_CONNECTION_STRING"), help="storage connection string for --via queue (default: $AZURE_STORAGE_CONNECTION_STRING)")
    batch.add_argument("--queue-url", help="queue service URL for --via queue with Entra ID, e.g. https://<account>.queue.core.windows.net")
    batch.add_argument("--queue", default=DEFAULT_QUEUE, help=f"queue name (default {DEFAULT_QUEUE})")
    batch.add_argument("--api-version", default=API_VERSION)
    batch.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status checks of a job (default 2)")
    batch.add_argument("--concurrency", type=int, default=16, help="jobs in flight at once (default 16)")
    batch.add_argument("--timeout", type=float, help="give up on a job after this many seconds")
    return root


async def _run(args: argparse.Namespace, console: Console) -> int:
    async with AsyncExitStack() as stack:
        auth: httpx.Auth | None = None
        if args.key:
            auth = FunctionKeyAuth(args.key)
        elif args.token:
            auth = static_token(args.token)
        elif args.scope:
            auth, credential = entra_auth(args.scope)
            stack.push_async_callback(credential.close)
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=args.endpoint, auth=auth, timeout=60, headers={"User-Agent": "image-batch-client/0.1"})
        )
        queue = await _queue(args, stack)
        config = BatchConfig(
            endpoint=args.endpoint, out=args.out, via=args.via, deployment=args.deployment, api_version=args.api_version,
            poll_interval=args.poll_interval, concurrency=args.concurrency, timeout=args.timeout,
        )
        results = await run_batch(args.file, config, http, queue=queue, reporter=reporter_for(console))
        console.print(f"results: {args.out / 'results.jsonl'}", markup=False, highlight=False)
        return 1 if failed(results) else 0


async def _queue(args: argparse.Namespace, stack: AsyncExitStack) -> QueueSubmitter | None:
    if args.via != "queue":
        return None
    submitter: QueueSubmitter
    if args.connection_string:
        submitter = QueueSubmitter.from_connection_string(args.connection_string, args.queue)
    else:
        credential: Any = DefaultAzureCredential()
        stack.push_async_callback(credential.close)
        submitter = QueueSubmitter.with_identity(args.queue_url, credential, args.queue)
    stack.push_async_callback(submitter.close)
    return submitter


def main(argv: list[str] | None = None, console: Console | None = None) -> int:
    """Run the command; returns the exit status."""
    arguments = parser()
    args = arguments.parse_args(argv)
    if not args.file.is_file():
        arguments.error(f"no such file: {args.file}")
    if args.via == "queue" and not (args.connection_string or args.queue_url):
        arguments.error("--via queue needs --connection-string (or $AZURE_STORAGE_CONNECTION_STRING) or --queue-url")
    try:
        return asyncio.run(_run(args, console or Console()))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to carry on", file=sys.stderr)
        return 130
