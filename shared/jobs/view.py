"""What callers see of a job: the operation status and the results-queue post.

Links are signed when the job is read, never stored: a stored link would expire
while the job record lives on.
"""

from __future__ import annotations

import json
from typing import Any

from shared.archive import Archive
from shared.jobs.record import JobRecord, JobResult


async def status_view(record: JobRecord, archive: Archive) -> dict[str, Any]:
    """``GET /openai/operations/images/{id}``: {id, status, created, result?, error?} with fresh links."""
    return {"id": record.id, "status": record.status.value, "created": record.created, **await _ending(record, archive)}


# A queue message holds 64 KiB: a post stays under this many characters (JSON, ASCII only), which leaves room for
# the XML the queue client wraps it in (a link's every "&" is sent as "&amp;").
RESULTS_MESSAGE_CHARS = 48 * 1024


async def notification(record: JobRecord, archive: Archive) -> str:
    """The results-queue post when a job ends, as sent: {id, status, result | error}.

    Upstream's words in a result (ten revised prompts of 4,000 characters each, escaped) can pass a queue
    message's size; such a post keeps the id, the status, the links and names, the cost and the error's code
    and message, and lists under ``omitted`` what it left out (the job's record has all of it)."""
    note = {"id": record.id, "status": record.status.value, **await _ending(record, archive)}
    text = json.dumps(note)
    if len(text) <= RESULTS_MESSAGE_CHARS:
        return text
    kept: dict[str, Any] = {"id": note["id"], "status": note["status"]}
    omitted: list[str] = []
    if "result" in note:
        result = note["result"]
        kept["result"] = {"created": result["created"], "data": [{"url": i["url"], "name": i["name"]} for i in result["data"]]}
        if "cost" in result:
            kept["result"]["cost"] = result["cost"]
        omitted += [f"result.{k}" for k in result if k not in kept["result"] and k != "data"]
        omitted += sorted({f"result.data[].{k}" for i in result["data"] for k in i if k not in ("url", "name")})
    if "error" in note:
        error = note["error"]
        kept["error"] = {k: error[k] for k in ("code", "message", "param") if k in error}
        omitted += [f"error.{k}" for k in error if k not in kept["error"]]
    kept["omitted"] = omitted
    return json.dumps(kept)


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
