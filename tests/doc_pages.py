"""The project's Markdown pages as the documentation tests read them: their code blocks and their links.

Code blocks are found by sybil's Markdown lexers (fences in lists and quotes, ``~~~`` fences,
nested fences, and ``<!-- invisible-code-block: LANG -->`` comments, which a reader never sees
and the tests run as a page's set-up). A fence's info string is its language, then markers::

    ```bash              run against the local stack (tests/test_docs_examples.py)
    ```python            the same, in process
    ```bash azure        needs Azure: checked for syntax only (bash -n, compile())
    ```bash server       starts a server that runs until stopped: syntax only (the suite's stack stands in)
    ```bash ci           a command CI runs itself (.ci/run, or a slow test names it): syntax only

Every other fence is shown, never run, and must say what it shows (``json``, ``text``, ...), so
a command cannot hide from the tests in an unlabelled block.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Region
from sybil.parsers.abstract.lexers import LexerCollection
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

ROOT = Path(__file__).resolve().parent.parent

RUN = ("bash", "python")  # the languages whose blocks the tests execute
SHOWN = ("json", "jsonl", "text", "console", "http", "html", "powershell", "hcl", "bicep")  # shown, never run
MARKERS = {
    "azure": "needs an Azure subscription or deployed resources",
    "server": "starts a server that runs until stopped; the suite's own stack stands in for it",
    "ci": "a command CI runs itself (.ci/run) or a slow test runs (tests/test_dev_stack.py, tests/test_bench_smoke.py)",
}
_SKIPPED_DIRS = {".git", ".venv", "node_modules", ".azurite", "out", ".pytest_cache", ".terraform"}


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown page of the project: those git knows, and new ones not yet added."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=root, capture_output=True, text=True, check=False
    )
    if listed.returncode == 0 and listed.stdout.strip():
        return sorted(root / line for line in listed.stdout.splitlines() if (root / line).is_file())
    return sorted(p for p in root.rglob("*.md") if not _SKIPPED_DIRS & set(p.relative_to(root).parts))


@dataclass(frozen=True)
class Block:
    """One code block of a page."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    markers: frozenset[str]
    source: str
    invisible: bool  # an <!-- invisible-code-block: LANG --> set-up, never shown
    region: Region

    @property
    def runs(self) -> bool:
        """Executed against the local stack (not only checked for syntax)."""
        return self.language in RUN and not self.markers

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _info(region: Region) -> tuple[str, frozenset[str]]:
    words = str(region.lexemes.get("info") or "").split()
    return (words[0] if words else ""), frozenset(words[1:])


class _Lexers:
    """Sybil's lexers for fenced blocks (any info string, none too) and invisible set-up blocks."""

    def __init__(self) -> None:
        self.fenced = FencedCodeBlockLexer(language=r"[^\n]*", mapping={"language": "info", "source": "source"})
        self.invisible = DirectiveInHTMLCommentLexer(directive=r"invisible-code-block", arguments=r"[^\n]+", mapping={"arguments": "info", "source": "source"})

    def __call__(self, document: Document) -> Iterator[tuple[Region, bool]]:
        for region in LexerCollection([self.fenced])(document):
            yield region, False
        for region in LexerCollection([self.invisible])(document):
            yield region, True


def page_blocks(path: Path) -> list[Block]:
    """Every code block of a page, in the order they appear."""
    document = Document(path.read_text(encoding="utf-8"), str(path))
    found = []
    for region, invisible in _Lexers()(document):
        language, markers = _info(region)
        line = document.text.count("\n", 0, region.start) + 1
        found.append(Block(path, line, language, markers, str(region.lexemes["source"]), invisible, region))
    return sorted(found, key=lambda block: block.region.start)


def label_problem(block: Block) -> str | None:
    """Why a block's info string is not one the tests understand, or None."""
    if block.language in RUN:
        unknown = block.markers - set(MARKERS)
        return f"unknown marker(s) {sorted(unknown)}; known: {sorted(MARKERS)}" if unknown else None
    if block.language in SHOWN and not block.markers and not block.invisible:
        return None
    return f"fence language {block.language or '(none)'!r}: give one of {RUN + SHOWN} (commands in bash or python, so the tests run them)"


# --- links and anchors ------------------------------------------------------------------------------

_FENCE = re.compile(r"(?ms)^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$")
_COMMENT = re.compile(r"(?s)<!--.*?-->")
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"(?m)^[ ]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_TARGET = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
_HTML_ID = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"(?m)^[ ]{0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")


def prose(text: str) -> str:
    """The text without fenced code, HTML comments and code spans: where links are links."""
    return _CODE_SPAN.sub("", _COMMENT.sub("", _FENCE.sub("", text)))


def links(text: str) -> list[str]:
    """Every link target of a Markdown text (inline, reference definitions, HTML a/img), in order."""
    body = prose(text)
    return [m.group(1) for pattern in (_INLINE_LINK, _REFERENCE_DEF, _HTML_TARGET) for m in pattern.finditer(body)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|(?<!\w)_|_(?!\w))", "", text)  # emphasis marks; snake_case keeps its underscores
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: one per heading (GitHub numbers repeats: -1, -2), and explicit <a id>."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_COMMENT.sub("", _FENCE.sub("", text))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found | {m.group(1) for m in _HTML_ID.finditer(text)}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each relative link of a page: a missing file, or an anchor its target lacks."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"(?i)[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # absolute (https:, mailto:): not this repository's to check offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no such file")
            continue
        if not linked.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
            continue
        if anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
            problems.append(f"{target}: {linked.relative_to(root.resolve())} has no heading or anchor #{anchor}")
    return problems
