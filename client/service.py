"""The library: ``submit``, ``wait`` and ``download`` against the service's background-job routes.

Each takes an ``httpx.AsyncClient`` whose ``base_url`` is the service endpoint and whose
``auth`` authenticates to it (see :mod:`client.auth`). Images are fetched from the links
the status gives (read-only SAS URLs to storage) *without* that auth: the function key
or token never leaves for another host.

    POST {endpoint}/openai/deployments/{deployment}/images/generations:submit?api-version=...
         Idempotency-Key: {id}                    -> 202 {id, status}
    GET  {endpoint}/openai/operations/images/{id} -> {id, status, created, result?, error?}
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx

from client.lines import BatchRequest

API_VERSION = "2025-04-01-preview"
TERMINAL = ("succeeded", "failed")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class JobError(Exception):
    """The service refused or failed a job: ``error`` is its ``{"code", "message", "param"?}``."""

    def __init__(self, error: dict[str, Any], *, refused: bool = False) -> None:
        super().__init__(f"{error.get('code', 'error')}: {error.get('message', '')}")
        self.error = error
        self.refused = refused  # refused before anything was generated (a 4xx on submit)


@dataclass(frozen=True)
class Operation:
    """A job as the status route describes it."""

    id: str
    status: str
    view: dict[str, Any]

    @property
    def urls(self) -> list[str]:
        """The image links of a succeeded job."""
        return [d["url"] for d in self._data() if d.get("url")]

    def links(self, endpoint: str) -> list[str]:
        """The service's never-expiring links (``{endpoint}/images/{name}``), from the blob names the job result gives.

        These go in results.jsonl instead of the SAS URLs, which hold a signature; a result without
        names (an older service) falls back to :func:`stable_link`.
        """
        return [
            f"{endpoint.rstrip('/')}/images/{d['name']}" if isinstance(d.get("name"), str) else stable_link(endpoint, d["url"], self.id)
            for d in self._data()
            if d.get("url")
        ]

    def _data(self) -> list[dict[str, Any]]:
        data = (self.view.get("result") or {}).get("data") or []
        return [d for d in data if isinstance(d, dict)]


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, dict) else {"code": f"HTTP {response.status_code}", "message": response.reason_phrase}


async def _request(http: httpx.AsyncClient, method: str, url: str, *, attempts: int, pause: float, **kwargs: Any) -> httpx.Response:
    """One call, repeated on a connection failure or a transient status (safe: every call here is idempotent)."""
    attempt = 1
    while True:
        wait_for = pause * attempt
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt >= attempts:
                raise
        else:
            if response.status_code not in TRANSIENT_STATUS or attempt >= attempts:
                return response
            retry_after = response.headers.get("retry-after", "")
            wait_for = max(wait_for, float(retry_after)) if retry_after.isdigit() else wait_for
        await asyncio.sleep(wait_for)
        attempt += 1


async def submit(http: httpx.AsyncClient, request: BatchRequest, *, api_version: str = API_VERSION, attempts: int = 4, pause: float = 1.0) -> Operation:
    """Submit one request as a background job keyed by ``request.id`` (the Idempotency-Key): submitting again is free.

    The service names the job itself (it scopes keys by deployment and caller): poll the returned ``Operation.id``.
    """
    kind = "edits" if request.operation == "edit" else "generations"
    response = await _request(
        http,
        "POST",
        f"/openai/deployments/{request.deployment}/images/{kind}:submit",
        params={"api-version": api_version},
        json=request.body,
        headers={"Idempotency-Key": request.id},
        attempts=attempts,
        pause=pause,
    )
    if response.status_code != 202:
        raise JobError(_error_of(response), refused=400 <= response.status_code < 500)
    body = response.json()
    return Operation(str(body.get("id") or request.id), str(body.get("status")), body)


async def status(http: httpx.AsyncClient, job_id: str, *, api_version: str = API_VERSION, attempts: int = 4, pause: float = 1.0) -> Operation | None:
    """The job's status, or None if the service has no job of that id (yet)."""
    response = await _request(http, "GET", f"/openai/operations/images/{job_id}", params={"api-version": api_version}, attempts=attempts, pause=pause)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise JobError(_error_of(response))
    view = response.json()
    return Operation(job_id, str(view.get("status")), view)


async def wait(
    http: httpx.AsyncClient,
    job_id: str,
    *,
    poll_interval: float = 2.0,
    api_version: str = API_VERSION,
    on_status: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Operation:
    """Poll until the job succeeds (returned) or fails (``JobError``). A job not known yet (a queue
    message not picked up) counts as queued. ``on_status`` hears every status change; after
    ``timeout`` seconds (None: no limit) ``TimeoutError``."""
    last = None
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    while True:
        operation = await status(http, job_id, api_version=api_version, pause=poll_interval)
        current = operation.status if operation else "notRunning"
        if current != last and on_status is not None:
            on_status(current)
        last = current
        if operation is not None and operation.status == "succeeded":
            return operation
        if operation is not None and operation.status == "failed":
            raise JobError(operation.view.get("error") or {"code": "failed", "message": "the job failed without an error"})
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            raise TimeoutError(f"job {job_id} is still {current} after {timeout} s")
        await asyncio.sleep(poll_interval)


def stable_link(endpoint: str, url: str, job_id: str) -> str:
    """The service's never-expiring link (``{endpoint}/images/{name}``) for a SAS link to an archived image.

    The archive names a job's images ``{prefix}/{id}/{n}.{ext}``: the name is the path from the
    segment before the id. Links go in results.jsonl instead of SAS URLs, which hold a signature.
    """
    parts = PurePosixPath(urlsplit(url).path).parts
    if job_id in parts[:-1]:
        index = parts.index(job_id)
        return f"{endpoint.rstrip('/')}/images/{'/'.join(parts[max(1, index - 1):])}"
    return urlsplit(url)._replace(query="", fragment="").geturl()  # not an archive name we know: the URL without its query


async def download(http: httpx.AsyncClient, operation: Operation, out_dir: Path, *, attempts: int = 4, pause: float = 1.0) -> list[Path]:
    """Save each image of a succeeded job as ``{id}-{n}.{ext}`` in ``out_dir`` (written whole or not at all)."""
    files = []
    for index, url in enumerate(operation.urls):
        response = await _fetch_image(http, url, attempts=attempts, pause=pause)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        extension = EXTENSIONS.get(content_type) or PurePosixPath(urlsplit(url).path).suffix.lstrip(".") or "bin"
        files.append(await asyncio.to_thread(_save, out_dir / f"{operation.id}-{index}.{extension}", response.content))
    return files


def _save(target: Path, data: bytes) -> Path:
    """Write beside the target, then rename: an interrupted write never leaves a file that looks done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


async def _fetch_image(http: httpx.AsyncClient, url: str, *, attempts: int, pause: float) -> httpx.Response:
    if url.startswith("/"):
        # A stable link on the service: ask it (with auth) where the image is, then fetch that without auth.
        redirect = await _request(http, "GET", url, attempts=attempts, pause=pause, follow_redirects=False)
        url = redirect.headers.get("location", "") if redirect.is_redirect else ""
        if not url:
            raise JobError({"code": f"HTTP {redirect.status_code}", "message": "the service gave no link to the image"})
    response = await _request(http, "GET", url, attempts=attempts, pause=pause, auth=None, follow_redirects=True)
    if response.status_code != 200:
        # Only the status: the URL holds a SAS signature.
        raise JobError({"code": f"HTTP {response.status_code}", "message": "downloading an image failed"})
    return response
