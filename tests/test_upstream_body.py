"""ImageBodyReader (the streaming b64_json decoder) answers exactly what json.loads + b64decode would,
except that the rest of the document must be strict JSON (text storable as UTF-8).

Random documents with escapes, bad padding, look-alike keys and truncation, fed in random
chunk splits, compared with the straightforward reference. Seeded, so it is repeatable.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from shared.errors import ServiceError
from shared.upstream import ImageBodyReader


def decoded_plainly(value: str, limit: int) -> Any:
    """What the old path gave for one b64_json string: the bytes, "large" or "invalid"."""
    if len(value) * 3 // 4 > limit + 3:
        return "large"
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "invalid"


def b64_values(doc: Any, decode: Callable[[str], Any]) -> list[Any]:
    """decode(value) for every "b64_json" string in the document, in document order."""
    out: list[Any] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "b64_json" and isinstance(v, str):
                    out.append(decode(v))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return out


def storable_outside_images(doc: Any) -> bool:
    """Every key and every string but the b64_json values can be stored as UTF-8 (no lone surrogate):
    the reader parses the rest of the document as strict JSON, which refuses such text."""

    def ok(text: str) -> bool:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    if isinstance(doc, dict):
        return all(ok(k) and ((k == "b64_json" and isinstance(v, str)) or storable_outside_images(v)) for k, v in doc.items())
    if isinstance(doc, list):
        return all(storable_outside_images(v) for v in doc)
    return ok(doc) if isinstance(doc, str) else True


def reference(body: bytes, limit: int) -> Any:
    try:
        doc = json.loads(body)
    except ValueError:
        return ("notjson",)
    # A key spelled with an escape is an ordinary key to the reader: its value stays in the skeleton.
    if not storable_outside_images(json.loads(body.replace(b"b64\\u005fjson", b"b64_spelled"))):
        return ("notjson",)
    return ("ok", b64_values(doc, lambda v: decoded_plainly(v, limit)))


def streamed(body: bytes, limit: int, cuts: list[int]) -> Any:
    r = ImageBodyReader(limit)
    pos = 0
    for c in [*cuts, len(body)]:
        r.feed(body[pos:c])
        pos = c
    try:
        doc = r.result()
    except ValueError:
        return ("notjson",)

    def decode(value: str) -> Any:
        try:
            image = r.image(value)
        except ServiceError as e:
            return "large" if "larger" in e.message else "invalid"
        # A string the reader did not stream (e.g. under a look-alike key) decodes the plain way.
        return decoded_plainly(value, limit) if image is None else image

    return ("ok", b64_values(doc, decode))


rng = random.Random(4)


def rand_b64() -> str:
    raw = rng.randbytes(rng.randrange(0, 40))
    t = base64.b64encode(raw).decode()
    r = rng.random()
    if r < 0.1 and t:
        t = t[:-1]  # bad padding
    elif r < 0.2:
        t = t.replace("A", "\\u0041")  # escaped chars (as raw JSON text)
    elif r < 0.3:
        t = t.replace("/", "\\/")
    elif r < 0.35:
        t = t + "\\n"
    elif r < 0.4 and len(t) > 8:
        t = t[:4] + "=" + t[5:]
    elif r < 0.45:
        t = t[:3] + "\\u00e9" + t[3:]
    elif r < 0.5:
        t = t + "\\ud800"
    return t


def rand_doc() -> bytes:
    items = []
    for _i in range(rng.randrange(0, 3)):
        item = '{{"b64_json": "{}", "revised_prompt": {}, "x": [1, 2.5, true, null]}}'.format(
            rand_b64(),
            json.dumps(rng.choice(['a "b64_json": "x"', 'q\\"b64_json', "b64_json", "\\\\", "é"])),
        )
        if rng.random() < 0.2:
            item = f'{{"b64_json" :\n "{rand_b64()}"}}'
        if rng.random() < 0.1:
            item = '{"b64_json": null}'
        if rng.random() < 0.1:
            item = f'{{"b64\\u005fjson": "{rand_b64()}"}}'
        if rng.random() < 0.05:
            item = f'{{"a\\"b64_json": "{rand_b64()}"}}'
        items.append(item)
    doc = '{{"created": 1, "data": [{}], "usage": {{"b64_json": 3}}}}'.format(", ".join(items))
    if rng.random() < 0.05:
        doc = doc[:-3]
    if rng.random() < 0.03:
        doc = doc.replace('"data"', '"b64_json"', 1)
    return doc.encode()


@pytest.mark.parametrize("chunk", range(4))
def test_streamed_decoding_matches_the_reference(chunk: int) -> None:
    mismatches = []
    for _ in range(1500):
        body = rand_doc()
        limit = rng.choice([1000, 10, 20])
        cuts = sorted(rng.sample(range(len(body)), min(len(body), rng.randrange(0, 6))))
        if rng.random() < 0.2:
            cuts = list(range(1, len(body)))
        expected, got = reference(body, limit), streamed(body, limit, cuts)
        if expected != got:
            mismatches.append((body, limit, cuts, expected, got))
    assert mismatches == []


def test_a_real_image_answer_decodes_to_the_same_bytes() -> None:
    image = rng.randbytes(300_000)
    body = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(image).decode(), "revised_prompt": "r"}]}).encode()
    reader = ImageBodyReader(10_000_000)
    for start in range(0, len(body), 65536):
        reader.feed(body[start : start + 65536])
    doc = reader.result()
    assert reader.image(doc["data"][0]["b64_json"]) == image
    assert doc["data"][0]["revised_prompt"] == "r"
