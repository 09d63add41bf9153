"""Every code example of every Markdown page runs, against the local stack a user gets from `python3 dev.py serve`.

The pages' examples are written for that stack exactly as a user copies them: the API on
``http://127.0.0.1:7071`` and Azurite on its usual ports (``UseDevelopmentStorage=true``). Here
the same stack (``local.stack.running_stack``: Azurite, the simulator, the API over uvicorn, the
queue runner) runs on free ports, and ``DOCUMENTED`` is the one place that maps the documented
addresses to it; a runnable example naming any other loopback address fails, so nothing is
substituted by accident. Shell blocks run in bash (``-e -o pipefail``) from a folder that looks
like the repository root (links to its files; what an example writes stays in the folder);
Python blocks run in process, one namespace per page, in page order (a block may use what an
earlier one made). An example that prints more than ``MAX_OUTPUT`` bytes fails: none may flood
a terminal. Blocks marked ``azure``, ``server`` or ``ci`` (tests/doc_pages.py says why) are
checked for syntax only: ``bash -n`` and ``compile()``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from local.stack import Stack, running_stack
from tests.doc_pages import ROOT, Block, label_problem, markdown_files, page_blocks

MAX_OUTPUT = 64 * 1024  # an example may print a JSON answer, never an image's base64
EXAMPLE_TIMEOUT = 120  # seconds; the simulator answers at once
_LOOPBACK = re.compile(r"(?:https?://)?(?:127\.0\.0\.1|localhost)(?::\d+)?|UseDevelopmentStorage=true")
_KEPT_OUT_OF_THE_FOLDER = {".git", ".azurite", "out", ".pytest_cache", "__pycache__"}

PAGES = markdown_files()
BLOCKS = [block for page in PAGES for block in page_blocks(page)]
RUNNABLE = [block for block in BLOCKS if block.runs]
SYNTAX_ONLY = [block for block in BLOCKS if block.language in ("bash", "python") and block.markers]


def documented(stack: Stack) -> dict[str, str]:
    """The addresses the pages give (those of `python3 dev.py serve`), and where the test's stack has them.

    `python3 dev.py token` asks the stack at its default address, the documented one, for a token:
    here it asks the test's stack."""
    assert stack.azurite is not None, "the docs stack runs its own Azurite"
    return {
        "http://127.0.0.1:7071": stack.url,
        "UseDevelopmentStorage=true": stack.azurite.connection_string,
        "python3 dev.py token": f"python3 dev.py token --url {stack.url}",
    }


def localize(source: str, addresses: dict[str, str]) -> str:
    """The example with each documented address replaced by the test stack's; AssertionError for any other loopback address."""
    stray = [m.group() for m in _LOOPBACK.finditer(source) if m.group() not in addresses]
    assert not stray, f"the example names {stray}: documented addresses are {sorted(addresses)} (tests/test_docs_examples.py DOCUMENTED)"
    for known, actual in addresses.items():
        source = source.replace(known, actual)
    return source


@dataclass
class PageRun:
    """One page's examples, run in order: its namespace, its folder, how far it got."""

    path: Path
    folder: Path
    env: dict[str, str]
    namespace: dict[str, Any] = field(default_factory=dict)
    done: int = 0
    failed: str | None = None

    def run_through(self, blocks: list[Block], addresses: dict[str, str]) -> None:
        """Run the page's runnable blocks up to and including the last of ``blocks`` not yet run."""
        page = [b for b in RUNNABLE if b.path == self.path]
        target = page.index(blocks[-1]) + 1
        while self.done < target:
            block = page[self.done]
            if self.failed:
                pytest.fail(f"{block.id}: an earlier example of this page failed ({self.failed})")
            self.done += 1
            try:
                (_run_bash if block.language == "bash" else _run_python)(block, self, addresses)
            except BaseException:
                self.failed = block.id
                raise


def _run_bash(block: Block, run: PageRun, addresses: dict[str, str]) -> None:
    source = localize(block.source, addresses)
    # A session of its own, so a timeout ends everything the example started, not bash alone.
    with subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", source], cwd=run.folder, env=run.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as done:
        try:
            stdout, stderr = done.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(done.pid, signal.SIGKILL)
            stdout, stderr = done.communicate()
            pytest.fail(f"{block.id}: still running after {EXAMPLE_TIMEOUT} s\n{block.source}{stdout.decode(errors='replace')[-2000:]}")
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    assert done.returncode == 0, f"{block.id}: exit {done.returncode}\n--- example\n{block.source}--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    assert len(stdout) + len(stderr) <= MAX_OUTPUT, f"{block.id} prints {len(stdout) + len(stderr)} bytes to a terminal"


def _run_python(block: Block, run: PageRun, addresses: dict[str, str]) -> None:
    source = "\n" * block.line + localize(block.source, addresses)  # tracebacks name the page's own line
    code = compile(source, str(block.path), "exec", dont_inherit=True)
    printed = io.StringIO()
    with contextlib.chdir(run.folder), contextlib.redirect_stdout(printed):
        exec(code, run.namespace)  # noqa: S102  # the page's own example
    assert len(printed.getvalue()) <= MAX_OUTPUT, f"{block.id} prints {len(printed.getvalue())} characters to a terminal"


def _repository_folder(folder: Path) -> Path:
    """A folder that looks like the repository root: a link to each of its entries, so examples write here."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in ROOT.iterdir():
        if entry.name not in _KEPT_OUT_OF_THE_FOLDER:
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`python3 dev.py serve` in this process on free ports, with no simulated latency."""
    with running_stack(latency=0, location=tmp_path_factory.mktemp("docs-azurite"), azurite_ports="free", command="tests/test_docs_examples.py") as stack:
        yield stack


@pytest.fixture(scope="module")
def page_runs(docs_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, PageRun]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    env |= {"NO_PROXY": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1", "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    return {
        page: PageRun(page, _repository_folder(tmp_path_factory.mktemp("page") / "repo"), env)
        for page in sorted({block.path for block in RUNNABLE})
    }


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.id)
def test_the_example_runs_against_the_local_stack(block: Block, docs_stack: Stack, page_runs: dict[Path, PageRun]) -> None:
    page_runs[block.path].run_through([block], documented(docs_stack))


@pytest.mark.parametrize("block", SYNTAX_ONLY, ids=lambda block: block.id)
def test_an_example_that_needs_azure_or_runs_forever_is_at_least_valid_syntax(block: Block) -> None:
    if block.language == "bash":
        checked = subprocess.run(["bash", "-n", "-c", block.source], capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, f"{block.id}: {checked.stderr}"
    else:
        compile(block.source, block.id, "exec", dont_inherit=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_code_block_says_what_it_is(page: Path) -> None:
    """A command in an unlabelled block, or under a marker nobody knows, would escape the tests."""
    problems = [f"{block.id}: {problem}" for block in page_blocks(page) if (problem := label_problem(block))]
    assert problems == []


def test_the_pages_have_examples_to_run() -> None:
    """The README's and the topic pages' examples are found: an empty list would pass everything."""
    pages = {block.path.relative_to(ROOT).as_posix() for block in RUNNABLE}
    assert "README.md" in pages and any(page.startswith("docs/") for page in pages)
    assert {block.language for block in RUNNABLE} == {"bash", "python"}


# --- the machinery itself ---------------------------------------------------------------------------


def test_blocks_are_read_with_their_markers_lines_and_set_up(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n```bash\necho one\n```\n\n- in a list:\n\n  ```python azure\n  x = 1\n  ```\n\n"
        "<!-- invisible-code-block: python\nmade = 2\n-->\n\n```json\n{}\n```\n\n```\nls\n```\n\n```bash forever\nx\n```\n",
        encoding="utf-8",
    )
    blocks = page_blocks(page)
    assert [(b.line, b.language, sorted(b.markers), b.invisible) for b in blocks] == [
        (3, "bash", [], False), (9, "python", ["azure"], False), (13, "python", [], True), (17, "json", [], False),
        (21, "", [], False), (25, "bash", ["forever"], False),
    ]  # fmt: skip
    assert blocks[1].source == "x = 1\n" and blocks[2].source.strip() == "made = 2"
    assert [b.runs for b in blocks] == [True, False, True, False, False, False]
    assert [label_problem(b) is None for b in blocks] == [True, True, True, True, False, False]


def test_only_documented_addresses_are_replaced_and_any_other_loopback_address_fails() -> None:
    addresses = {"http://127.0.0.1:7071": "http://127.0.0.1:40123", "UseDevelopmentStorage=true": "DefaultEndpointsProtocol=http;..."}
    assert localize('curl "http://127.0.0.1:7071/healthz"', addresses) == 'curl "http://127.0.0.1:40123/healthz"'
    assert localize('QueueClient.from_connection_string("UseDevelopmentStorage=true", "q")', addresses).count("DefaultEndpoints") == 1
    for stray in ("curl http://127.0.0.1:8089/x", "curl localhost:7071/x", "curl http://127.0.0.1:70710/x"):
        with pytest.raises(AssertionError, match="documented addresses"):
            localize(stray, addresses)
