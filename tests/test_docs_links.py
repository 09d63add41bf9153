"""Every relative link and anchor of every Markdown page resolves (tests/doc_pages.py reads them).

A link to a file that moved, or to a heading that was renamed, fails here naming the page and
the link; anchors are computed as GitHub renders them (a heading's text, lowercased, punctuation
dropped, repeats numbered). Links to other sites are not fetched: no network here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doc_pages import ROOT, anchors, broken_links, links, markdown_files, slug

PAGES = markdown_files()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_pages_link_to_each_other() -> None:
    """The checker reads real links: the README links to the topic pages."""
    targets = links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert sum(target.startswith("docs/") for target in targets) >= 5


def test_anchors_are_computed_as_github_renders_headings() -> None:
    assert slug("Background jobs (the queue)") == "background-jobs-the-queue"
    assert slug("`IMAGES_BACKENDS`: pools of deployments") == "images_backends-pools-of-deployments"
    assert slug("Deploy with `az deployment sub create`") == "deploy-with-az-deployment-sub-create"
    assert slug("**Bold** and [a link](x.md) & more") == "bold-and-a-link--more"
    text = "# Roles\n\n## Roles\n\n```bash\n# not a heading\n```\n\n<a id=\"kept\"></a>\n"
    assert anchors(text) == {"roles", "roles-1", "kept"}


def test_a_broken_link_or_anchor_is_found_and_code_is_not_read_as_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Home\n\n[ok](docs/other.md#a-section) [top](#home) [web](https://example.com/x#y)\n"
        "[gone](docs/missing.md) [no anchor](docs/other.md#nowhere) [self](#nowhere-here)\n\n"
        "`[not a link](nothing.md)`\n\n```text\n[also not](nothing.md)\n```\n\n[ref]: docs/other.md#a-section\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=tmp_path) == [
        "docs/missing.md: no such file",
        "docs/other.md#nowhere: docs/other.md has no heading or anchor #nowhere",
        "#nowhere-here: README.md has no heading or anchor #nowhere-here",
    ]
