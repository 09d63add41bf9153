"""The local demo's edit step: edit the image the demo generated, by its archived name (nothing uploaded again).

Called by ``python -m local.stack run`` after :func:`local.stack.demo`, with what that returned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from local.archived import fetch_archived
from shared.models.families import BY_NAME

if TYPE_CHECKING:
    from local.stack import Stack

EDIT_PROMPT = "The same beach at sunset, the umbrella closed, warm light"


def demo_edit(stack: Stack, generated: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """POST a JSON edit naming the generated image, save the result, print where the edit and its record are."""
    deployment = str(generated["record"]["deployment"])
    family = stack.settings.family_of(deployment)
    row = BY_NAME.get(family or "")
    if row is None or row.edits is None:
        print(f"\n(no edit demo: deployment {deployment!r} runs {family}, which cannot edit images)")
        return None
    url = f"{stack.url}/openai/deployments/{deployment}/images/edits?api-version={stack.settings.api_version}"
    body = {"image": [generated["name"]], "prompt": EDIT_PROMPT, "size": "1024x1024", "quality": "medium"}
    print(f"\nPOST {url}\n     {json.dumps(body)}")
    started = time.monotonic()
    response = httpx.post(url, json=body, headers=stack.headers(), timeout=300)
    if response.status_code != 200:
        raise SystemExit(f"edit failed: HTTP {response.status_code} {response.text}")
    found = fetch_archived(stack, response.json()["data"][0]["url"], out_dir, "-edit")
    name, record_name, record, saved = found.name, found.record_name, found.record, found.saved
    print(f"HTTP 200 in {time.monotonic() - started:.1f} s: an edit of the image above, read from the archive by name")
    print(f"edited image   : container '{stack.settings.images_container}', blob '{name}'")
    print(f"its record     : blob '{record_name}', operation {record['operation']!r}, inputs {record['inputs']['image']}")
    print(f"stable link    : {stack.url}/images/{name}")
    print(f"saved to       : {saved}")
    return {"name": name, "record": record, "saved": saved}
