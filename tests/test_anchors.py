"""No regular expression in the service, the batch client or the local stand-ins anchors with ``$`` or ``^``.

``$`` matches before a final newline too, so ``re.match(r"^[a-z]+$", "abc\\n")`` passes and
``abc\\n`` goes on to become a blob name, a header or a file name. Whole-string checks use
``fullmatch`` (or ``\\A``/``\\Z`` where a pattern must say it): this reads every pattern literal
passed to the ``re`` module and fails on either anchor, so the class cannot come back.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

try:
    from re import _parser as sre_parse  # type: ignore[attr-defined]  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("shared", "client", "local") for p in (ROOT / folder).rglob("*.py"))
_RE_CALLS = {"compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall", "finditer"}
_ANCHORS = {"AT_END": "$", "AT_BEGINNING": "^"}


def _patterns(path: Path) -> list[tuple[int, str | bytes]]:
    """Every string literal given as the pattern of an ``re`` call in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _RE_CALLS):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "re") or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str | bytes):
            found.append((node.lineno, first.value))
        elif isinstance(first, ast.JoinedStr):  # an f-string: its literal parts
            text = "".join(v.value for v in first.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            found.append((node.lineno, text))
    return found


def _anchors(pattern: str | bytes) -> set[str]:
    """The line anchors in a parsed pattern (``\\A`` and ``\\Z`` are other opcodes and pass)."""
    seen: set[str] = set()

    def walk(items: object) -> None:
        for op, arg in items:  # type: ignore[attr-defined]
            if str(op) == "AT" and str(arg) in _ANCHORS:
                seen.add(_ANCHORS[str(arg)])
            for sub in arg if isinstance(arg, list | tuple) else ():
                if isinstance(sub, sre_parse.SubPattern):
                    walk(sub)
                elif isinstance(sub, list | tuple):
                    for inner in sub:
                        if isinstance(inner, sre_parse.SubPattern):
                            walk(inner)

    try:
        walk(sre_parse.parse(pattern))
    except re.error:  # an f-string's literal parts alone may not parse; then read the text itself
        text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
        seen |= {a for a in ("$", "^") if re.search(rf"(?<!\\){re.escape(a)}", text)}
    return seen


def test_the_check_itself_sees_both_anchors_and_lets_the_others_pass() -> None:
    assert _anchors(r"^[a-z]+$") == {"^", "$"}
    assert _anchors(r"(?:a|b$)") == {"$"}
    assert _anchors(r"\A[a-z]+\Z") == set() and _anchors(r"[$^]\$") == set()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pattern_anchors_with_dollar_or_caret(path: Path) -> None:
    offending = [(line, pattern, sorted(found)) for line, pattern in _patterns(path) if (found := _anchors(pattern))]
    assert not offending, f"{path.relative_to(ROOT)}: use fullmatch (or \\A ... \\Z) instead of ^/$: {offending}"
