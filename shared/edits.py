"""The one edit path the routes and the queue handler use: inputs checked and archived, upstream, outputs archived.

An edit has two ways in:

- **uploaded** (multipart): the bytes are checked (:func:`~shared.models.edits.check_inputs`)
  and stored once each under their content address before anything goes upstream
  (:func:`store_uploads`);
- **by name** (JSON, and every queued edit): the names are checked against the archive's
  naming rules (:func:`edit_from_json`), then the images are read, size-capped, and checked
  the same way (:func:`read_inputs`).

Then :func:`run_edit` calls the edits endpoint and archives the outputs with their record,
exactly as a generation is archived (same layout, links and crash rules), the record naming
the inputs. Queue messages carry ``"operation": "edit"`` and the inputs by name.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.callers import Caller
from shared.deadline import Deadline
from shared.errors import invalid
from shared.inputs import InputStore, check_source, input_name
from shared.models import ImageRequest
from shared.models.edits import EDIT_OPERATION, EditInput, EditRequest, check_inputs, edit_rules, names_from_json, parse_edit
from shared.models.families import EditRules
from shared.models.image_bytes import ImageFacts
from shared.pool.router import Send
from shared.service import Generation, ImageService
from shared.upstream import UpstreamClient, UpstreamResult
from shared.upstream.edits import edit as upstream_edit
from shared.upstream.edits import edit_body, edit_url
from shared.upstream.stream import UpstreamStream, open_stream


@dataclass(frozen=True)
class EditInputs:
    """An edit's images and mask, read or uploaded, checked."""

    images: tuple[EditInput, ...]
    mask: EditInput | None

    @property
    def pixels(self) -> list[int]:
        """Each input's pixels, the images' then the mask's: what a caller's budget prices them at (shared/pricing.py)."""
        return [item.facts.width * item.facts.height for item in (*self.images, *((self.mask,) if self.mask else ()))]


def edit_from_json(body: object, deployment: str, family: str, *, api_style_v1: bool = False, queued: bool = False) -> EditRequest:
    """An edit naming archived images (a JSON body, or a queue message when ``queued``), checked without I/O."""
    if not isinstance(body, dict):
        raise invalid(None, "The body must be a JSON object.", "invalid_type")
    fields = dict(body)
    operation = fields.pop("operation", None)
    if queued and operation != EDIT_OPERATION:
        raise invalid("operation", f"operation must be {EDIT_OPERATION!r} (or absent, for a generation), got {str(operation)[:40]!r}.")
    if not queued and operation is not None:
        raise invalid("operation", "Unknown parameter: 'operation' belongs to queue messages, not to this route.", "unknown_parameter")
    images, mask = names_from_json(fields)
    fields.pop("image", None)
    fields.pop("mask", None)
    for name in images:
        check_source(name, "image")
    if mask:
        check_source(mask, "mask")
    return parse_edit(fields, images, mask, deployment, family, api_style_v1=api_style_v1)


def queued_edit(request: EditRequest, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The job request of an edit (without id and deployment): its fields and its inputs by name.

    The job record holds it, whatever its size; the queue message only names the job (a claim check,
    shared/jobs/messages.py), so every edit the API accepts can be queued."""
    body = {"operation": EDIT_OPERATION, **{k: v for k, v in fields.items() if k != "model"}, "image": list(request.images)}
    if request.mask:
        body["mask"] = request.mask
    return body


def _openai(service: ImageService) -> bool:
    return service.settings.api_style == "openai"


Chunks = Sequence[bytes]  # an upload as it arrived, not joined yet
Namer = Callable[[bytes, ImageFacts], tuple[str, str]]  # bytes, facts -> (archive name, sha256)


async def check_uploads(service: ImageService, family: str, images: Sequence[tuple[str, Chunks]], mask: Chunks | None, caller: Caller) -> EditInputs:
    """Check uploaded images (``(param, chunks)``) and mask by their bytes; each named by its content address for ``caller``.

    In a worker thread: joining and hashing tens of megabytes takes tens of milliseconds (both let go
    of the GIL), and the event loop meanwhile serves every other request of the instance."""
    namer = functools.partial(input_name, await service.scope.key(), caller)
    return await asyncio.to_thread(_check_uploads, edit_rules(family), _openai(service), images, mask, namer)


def _check_uploads(rules: EditRules, openai: bool, uploads: Sequence[tuple[str, Chunks]], mask_chunks: Chunks | None, namer: Namer) -> EditInputs:
    images = [(param, b"".join(chunks)) for param, chunks in uploads]
    mask = b"".join(mask_chunks) if mask_chunks is not None else None
    facts, mask_facts = check_inputs(rules, images, mask, openai=openai)
    checked = tuple(EditInput(*_named_upload(namer, data, found)) for (_, data), found in zip(images, facts, strict=True))
    return EditInputs(checked, EditInput(*_named_upload(namer, mask, mask_facts)) if mask is not None and mask_facts else None)


def _named_upload(namer: Namer, data: bytes, facts: ImageFacts) -> tuple[str, bytes, ImageFacts, str]:
    name, digest = namer(data, facts)
    return name, data, facts, digest


async def store_uploads(service: ImageService, inputs: EditInputs, caller: Caller) -> None:
    """Store each uploaded input once (the same bytes twice in one request are one blob), as ``caller``'s."""
    every = [*inputs.images, *((inputs.mask,) if inputs.mask else ())]
    unique = {item.name: (item.name, item.data, item.facts.content_type, item.sha256) for item in every}
    await InputStore(service.archive).put_all(list(unique.values()), caller)


async def check_names(service: ImageService, request: EditRequest, caller: Caller) -> None:
    """The archived images a queued edit names are ``caller``'s (or it is an operator), exist and fit the
    edit limits (their bytes are checked when it runs)."""
    settings = service.settings
    await InputStore(service.archive).sizes(_named(request), settings.max_edit_file_bytes, settings.max_edit_total_bytes, caller)


def _named(request: EditRequest) -> list[tuple[str, str]]:
    return [*((name, "image") for name in request.images), *(((request.mask, "mask"),) if request.mask else ())]


async def read_inputs(service: ImageService, request: EditRequest, caller: Caller) -> EditInputs:
    """Read the archived images an edit names, which ``caller`` may see (each and all together within the edit limits), and check them."""
    settings = service.settings
    datas = await InputStore(service.archive).read_all(_named(request), settings.max_edit_file_bytes, settings.max_edit_total_bytes, caller)
    images = [("image", data) for data in datas[: len(request.images)]]
    mask = datas[len(request.images)] if request.mask else None
    facts, mask_facts = check_inputs(edit_rules(request.family), images, mask, openai=_openai(service))
    read = tuple(EditInput(name, data, found) for name, (_, data), found in zip(request.images, images, facts, strict=True))
    return EditInputs(read, EditInput(request.mask, mask, mask_facts) if request.mask and mask is not None and mask_facts else None)


async def run_edit(
    service: ImageService,
    request: EditRequest,
    *,
    inputs: EditInputs | None = None,
    generation_id: str,
    prefix: str,
    deadline: Deadline,
    budget: float,
    kind: str = "sync",
    caller: Caller,
) -> Generation:
    """Edit within ``deadline`` (reading the inputs by name unless given) and archive every output with the record before returning.

    The edit is made as a generation is (:meth:`ImageService.produce`): through the deployment's pool
    (the same failover rules, waits and record fields: backend, attempts, cost), and a call that reached
    upstream and failed leaves a failure record."""
    await service.archive.ensure_container()  # fail on storage before reading or paying for anything
    if inputs is None:
        inputs = await read_inputs(service, request, caller)
    images, mask = inputs.images, inputs.mask

    async def send(client: UpstreamClient, routed: ImageRequest, budget: float) -> UpstreamResult:
        assert isinstance(routed, EditRequest)  # the pool only renames the deployment
        return await upstream_edit(client, routed, images, mask, deadline=deadline, budget=budget)

    route = functools.partial(service.pools.route, request, send, deadline=deadline, budget=budget, job=kind == "job")
    return await service.produce(
        request, route, generation_id=generation_id, prefix=prefix, kind=kind, caller=caller, wait=deadline.remaining(), input_pixels=inputs.pixels
    )


def stream_send(inputs: EditInputs, deadline: Deadline) -> Send[UpstreamStream]:
    """The pool's ``send`` for a streamed edit: open the stream on the chosen backend with the inputs' bytes, within ``deadline``."""

    async def send(client: UpstreamClient, routed: ImageRequest, budget: float) -> UpstreamStream:
        assert isinstance(routed, EditRequest)  # the pool only renames the deployment
        body = edit_body(client.settings, routed, inputs.images, inputs.mask)
        url = edit_url(client.settings, routed.deployment)
        return await open_stream(client, url, body, body.headers, routed, deadline=deadline, budget=budget)

    return send


async def generate_or_edit(service: ImageService, request: ImageRequest, **options: Any) -> Generation:
    """The queue handler's one upstream call: an edit for an :class:`EditRequest`, else a generation."""
    if isinstance(request, EditRequest):
        return await run_edit(service, request, **options)
    return await service.generate(request, **options)

