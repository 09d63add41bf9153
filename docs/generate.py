"""Tables in the Markdown files, generated from the data they describe.

A generated region in a Markdown file sits between two markers::

    <!-- generated: models (python -m docs.generate) -->
    ...
    <!-- end generated -->

and holds exactly what the renderer of that name (``RENDERERS``) returns for a day. Adding a
table is adding a renderer here and a region where it belongs; every region in ``FILES`` is
kept current by ``python -m docs.generate`` and checked by ``--check`` (and tests/test_docs.py).
Renderers take the day because some tables show a state on it (a model's lifecycle); a region
records nothing else, so a table changes only when its data or the state on the day does.

    python -m docs.generate            rewrite every region from the data, the state on today's date
    python -m docs.generate --check    exit 1 naming each region that differs (nothing is written)
    python -m docs.generate --today 2027-01-01   the state on another day
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from shared.models import TABLE, Family, Rules, lifecycle_state

ROOT = Path(__file__).resolve().parents[1]
# The Markdown files that may hold generated regions.
FILES = (ROOT / "README.md", ROOT / "infra" / "README.md", ROOT / "docs" / "credentials.md")

_REGION = re.compile(r"(<!-- generated: (?P<name>[\w-]+)[^\n]*?-->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)

Renderer = Callable[[dt.date], str]


# --- models: shared/models/families.py ---------------------------------------------------------------

_STATES = {"ga": "GA", "preview": "preview", "no-new-customers": "no new customers", "retired": "retired",
           "openai-only": "OpenAI only (api.openai.com); not on Azure, not accepted yet"}  # fmt: skip


def _rules_cells(rules: Rules) -> dict[str, str]:
    gpt = rules.api == "gpt-image"
    sizes = ", ".join(rules.sizes)
    if rules.size_rule:
        rule = rules.size_rule
        sizes += (
            f", or edges multiples of {rule.edge_multiple}, long edge < {rule.max_edge_exclusive}, "
            f"ratio <= {rule.max_ratio}:1, {rule.min_pixels:,}-{rule.max_pixels:,} px"
        )
    seed_sizes = ", ".join(f"{a} -> {b}" for a, b in rules.seed_sizes.items())
    seed_qualities = ", ".join(f"{a} -> {b}" for a, b in rules.seed_qualities.items())
    return {
        "prompt": f"1-{rules.prompt_max_chars} chars",
        "size": sizes + (f" (translated: {seed_sizes})" if seed_sizes else ""),
        "n": "1" if rules.max_n == 1 else f"1-{rules.max_n}",
        "quality": ", ".join(rules.qualities) + (f" (translated: {seed_qualities})" if seed_qualities else ""),
        "style": ("accepted, dropped: " if gpt else "") + ", ".join(rules.styles),
        "response_format": "b64_json (default, plus url), url: as the model answers; upstream always base64" if gpt else "url (default), b64_json",
        "output_format": ", ".join(rules.output_formats) or "-",
        "output_compression": "0-100, jpeg only" if "output_compression" in rules.fields else "-",
        "background": ", ".join(rules.backgrounds) + " (transparent: png only)" if rules.backgrounds else "-",
        "moderation": ", ".join(rules.moderations) or "-",
    }


def _rules_table(rows: Iterable[Family]) -> list[str]:
    groups: dict[int, list[Family]] = {}
    for row in rows:
        if row.rules is not None:
            groups.setdefault(id(row.rules), []).append(row)
    columns = [(" / ".join(row.name for row in family), _rules_cells(family[0].rules)) for family in groups.values()]  # type: ignore[arg-type]
    lines = ["| | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {key} | " + " | ".join(cells[key] for _, cells in columns) + " |" for key in columns[0][1]]
    return lines


def render_models(today: dt.date) -> str:
    """The README's model tables: request rules per family, then each family's state on ``today``, templates and quota."""
    lines = _rules_table(TABLE)
    lines += ["", "| Family | Status | No new customers | Retires | Successor | Version in infra/ | Registration | Requests/min (tier 1) |"]
    lines.append("|---" * 8 + "|")
    for row in TABLE:
        quota = ", ".join(f"{rpm} {sku}" for sku, rpm in row.requests_per_minute.items()) or "-"
        registration = "?" if row.rules is None else "yes" if row.registration else "no"
        lines.append(
            f"| {row.name} | {_STATES[lifecycle_state(row, today)]} | {row.no_new_customers or '-'} | {row.retires or '-'} "
            f"| {row.successor or '-'} | {row.version if row.in_templates else '-'} | {registration} | {quota} |"
        )
    return "\n".join([*lines, "", _status_span(today)])


def _status_span(today: dt.date) -> str:
    """When the Status column holds: from Azure's last date on or before ``today`` until its next one."""
    dates = sorted({day for row in TABLE for day in (row.no_new_customers, row.retires) if day is not None})
    since = max((day for day in dates if day <= today), default=None)
    until = min((day for day in dates if day > today), default=None)
    held = (f"from {since}" if since else "") + (" " if since and until else "") + (f"until {until}" if until else "")
    return f"Status: Azure's state of each family {held}, the dates in the table (`python -m docs.generate` renders it for the day it runs)."


RENDERERS: dict[str, Renderer] = {"models": render_models}


# --- regions ----------------------------------------------------------------------------------------


def regions(text: str) -> list[tuple[str, str]]:
    """(name, body) of every generated region of a Markdown text, in order."""
    return [(match["name"], match["body"]) for match in _REGION.finditer(text)]


def regenerate(text: str, today: dt.date) -> str:
    """The text with every generated region rendered anew; ValueError for a region no renderer has."""

    def render(match: re.Match[str]) -> str:
        renderer = RENDERERS.get(match["name"])
        if renderer is None:
            raise ValueError(f"no renderer for the generated region {match['name']!r}; known: {', '.join(sorted(RENDERERS))}")
        return f"{match[1]}{renderer(today).rstrip()}\n{match[4]}"

    return _REGION.sub(render, text)


def stale(paths: Iterable[Path], today: dt.date) -> list[str]:
    """'file: region' for each generated region whose text differs from what its renderer gives."""
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        current = dict(regions(regenerate(text, today)))
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        found += [f"{shown}: {name}" for name, body in regions(text) if body != current[name]]
    return found


def main(argv: list[str] | None = None, files: Iterable[Path] = FILES) -> int:
    """The command line; ``files`` are the Markdown files it reads (tests give others)."""
    parser = argparse.ArgumentParser(prog="python -m docs.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report regions that differ, write nothing (exit 1 if any)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.datetime.now(dt.UTC).date(), help="the day states are shown on")
    args = parser.parse_args(argv)
    if args.check:
        differing = stale(files, args.today)
        for where in differing:
            print(f"out of date: {where} (run python -m docs.generate)", file=sys.stderr)
        return 1 if differing else 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        updated = regenerate(text, args.today)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
