"""What callers see of a job: the operation status and the results-queue post.

Links are signed when the job is read, never stored: a stored link would expire
while the job record lives on.
"""

from __future__ import annotations

from typing import Any

from shared.archive import Archive
from shared.jobs.record import JobRecord, JobResult


async def status_view(record: JobRecord, archive: Archive) -> dict[str, Any]:
    """``GET /openai/operations/images/{id}``: {id, status, created, result?, error?} with fresh links."""
    return {"id": record.id, "status": record.status.value, "created": record.created, **await _ending(record, archive)}


async def notification(record: JobRecord, archive: Archive) -> dict[str, Any]:
    """The results-queue post when a job ends: {id, status, result | error}."""
    return {"id": record.id, "status": record.status.value, **await _ending(record, archive)}


async def result_view(result: JobResult, archive: Archive) -> dict[str, Any]:
    """A result in the shape of a generation response: {created, data: [{url, name, revised_prompt?}], usage?, translations?}."""
    data = []
    for image in result.images:
        item = {"url": await archive.link(image.name), "name": image.name}
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    view: dict[str, Any] = {"created": result.created, "data": data}
    if result.usage:
        view["usage"] = result.usage
    if result.cost:
        view["cost"] = result.cost
    if result.translations:
        view["translations"] = result.translations
    return view


async def _ending(record: JobRecord, archive: Archive) -> dict[str, Any]:
    ending: dict[str, Any] = {}
    if record.result is not None:
        ending["result"] = await result_view(record.result, archive)
    if record.error:
        ending["error"] = record.error
    return ending
