"""The batch client's line reader and planner under any input: every line a request or an invalid line, never a crash.

Property tests, no network: :func:`parse_line` on lines hypothesis makes up (JSON of every
shape, with the characters and values that broke it: ``NaN``, lone surrogates, ids ending in
a newline), and :meth:`Batch.plan` on whole files and on results.jsonl files a person (or an
interrupted run) left behind: each line ends with exactly one outcome or is to be sent.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.batch import RESULTS, Batch, BatchConfig
from client.lines import DEPLOYMENT_PATTERN, ID_PATTERN, MAX_LINE_BYTES, BatchRequest, InvalidLine, parse_line, read_lines
from client.progress import SilentReporter, Tally

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

_TROUBLE = st.sampled_from(["\n", "\r", "\x00", "\ud800", "\udfff", "\u2028", " ", "-", "_", "a", "/", "."])
TEXT = st.text(st.one_of(st.characters(codec="utf-8"), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), _TROUBLE), max_size=20)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)  # floats: NaN and infinities too
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)
_FIELDS = {"prompt": st.one_of(TEXT, st.just("a cat")), "id": st.one_of(TEXT, st.just("job-1"), st.just("job-1\n")),
           "deployment": st.one_of(TEXT, st.just("gpt-image-1")), "operation": st.one_of(TEXT, st.sampled_from(["generation", "edit"])),
           "n": VALUES, "size": VALUES}  # fmt: skip
LINES_AS_OBJECTS = st.fixed_dictionaries({}, optional={k: st.one_of(v, VALUES) for k, v in _FIELDS.items()})


def _json_text(value: Any) -> str:
    """JSON as anyone might write it (json.dumps writes NaN and lone surrogates as the stdlib does)."""
    return json.dumps(value, ensure_ascii=False)


RAW_LINES = st.one_of(
    LINES_AS_OBJECTS.map(_json_text).map(lambda t: t.encode("utf-8", "surrogatepass")),
    VALUES.map(_json_text).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
)


def _check(parsed: BatchRequest | InvalidLine) -> None:
    if isinstance(parsed, InvalidLine):
        assert parsed.reason and (parsed.id is None or ID_PATTERN.fullmatch(parsed.id))
        json.dumps({"reason": parsed.reason}, ensure_ascii=False).encode("utf-8")  # it can be written to results.jsonl
        return
    assert ID_PATTERN.fullmatch(parsed.id) and DEPLOYMENT_PATTERN.fullmatch(parsed.deployment)
    assert parsed.operation in ("generation", "edit") and isinstance(parsed.body.get("prompt"), str) and parsed.body["prompt"].strip()
    json.dumps(parsed.message(), ensure_ascii=False, allow_nan=False).encode("utf-8")  # what is sent: strict JSON, UTF-8
    assert len(parsed.digest) == 64


@PROPERTY
@given(raw=RAW_LINES, default=st.sampled_from([None, "gpt-image-1-mini", "bad deployment\n"]))
def test_any_line_is_a_request_that_can_be_sent_or_an_invalid_line_with_its_reason(raw: bytes, default: str | None) -> None:
    _check(parse_line(1, raw, default))


@PROPERTY
@given(value=LINES_AS_OBJECTS)
def test_the_same_request_has_the_same_digest_and_id_whatever_order_its_keys_come_in(value: dict[str, Any]) -> None:
    first, second = parse_line(1, _json_text(value), "d"), parse_line(2, _json_text(dict(reversed(list(value.items())))), "d")
    if isinstance(first, BatchRequest):
        assert isinstance(second, BatchRequest) and (first.id, first.digest) == (second.id, second.digest)


def _plan(lines: list[bytes], results: list[str]) -> tuple[list[BatchRequest], list[Any]]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        out.mkdir()
        (out / RESULTS).write_text("".join(f"{r}\n" for r in results), encoding="utf-8", errors="surrogatepass")
        path = Path(folder) / "lines.jsonl"
        path.write_bytes(b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines))
        http = httpx.AsyncClient()  # planning sends nothing
        batch = Batch(BatchConfig(endpoint="http://unused", out=out, deployment="gpt-image-1-mini"), http, None, SilentReporter(), Tally())
        try:
            return batch.plan(path), batch.results
        finally:
            batch.close(False)
            asyncio.run(http.aclose())


_RESULT_ENTRIES = st.one_of(
    VALUES.map(_json_text),
    st.fixed_dictionaries(
        {"line": st.integers(0, 9), "state": st.sampled_from(["succeeded", "submitted", "failed", "invalid", "changed", "other"])},
        optional={"id": st.sampled_from(["job-1", "job-2", "b" * 32]), "request": st.one_of(st.just("0" * 64), TEXT), "files": VALUES, "reused": VALUES},
    ).map(_json_text),
)


@settings(PROPERTY, max_examples=120)
@given(lines=st.lists(RAW_LINES, max_size=8), results=st.lists(_RESULT_ENTRIES, max_size=6))
def test_a_file_and_any_earlier_results_give_each_line_one_outcome(lines: list[bytes], results: list[str]) -> None:
    todo, ended = _plan(lines, results)
    planned = sorted([r.line for r in todo] + [r.line for r in ended])
    assert len(planned) == len(set(planned))  # one outcome (or a send) per line, never two
    ids = [r.id for r in todo]
    assert len(ids) == len(set(ids))  # an id is sent once
    assert all(r.state in ("invalid", "changed", "succeeded") for r in ended)


def test_a_line_longer_than_the_bound_is_invalid_without_being_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"prompt": "' + b"x" * (3 * MAX_LINE_BYTES) + b'"}\n{"prompt": "next"}\n')
    first, second = list(read_lines(path, "d"))
    assert isinstance(first, InvalidLine) and "longer than" in first.reason and first.line == 1
    assert isinstance(second, BatchRequest) and second.line == 2
