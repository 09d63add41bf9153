"""Tables in the Markdown pages, generated from the data they describe: one source for each.

A generated region in a Markdown page sits between two markers::

    <!-- generated: settings (python -m docs.generate) -->
    ...
    <!-- end generated -->

and holds exactly what the renderer of that name (``RENDERERS``) returns. Adding a table is
adding a renderer here and a region where it belongs; every region of the pages in ``FILES``
is kept current by ``python -m docs.generate`` and checked by ``--check`` (and tests/test_docs.py).

Some tables show a state on a day (a model's lifecycle: GA, no new customers, retired). Such a
region says which day in its marker, ``<!-- generated: models as of 2026-12-06 ... -->``, and is
checked against the renderer *for that day*: the check is deterministic and fails only when the
data changes, never because a calendar date passed (a test that fails on the day a model retires,
with nothing changed in the code, stops every merge that day). That the stamp fell behind is said
instead: ``--check`` notes, without failing, each dated region whose state on today differs from
the stamped one, and ``python -m docs.generate`` moves the stamp to today only then (a table whose
state did not change keeps its stamp, so a run changes no file for nothing).

    python -m docs.generate            rewrite every region from the data (dated ones as of today when their state moved)
    python -m docs.generate --check    exit 1 naming each region that differs from its data (nothing is written)
    python -m docs.generate --today 2027-01-01   take another day for today
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from docs.roles import render_roles
from shared.models import TABLE, Family, Rules, lifecycle_state
from shared.settings import SETTINGS, Settings

ROOT = Path(__file__).resolve().parents[1]
# The Markdown pages that may hold generated regions: the README and every topic page.
FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "infra" / "README.md")

_REGION = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w-]+)(?: as of (?P<day>\d{4}-\d{2}-\d{2}))?(?P<note>[^\n]*?)-->\n)(?P<body>.*?)(?P<close><!-- end generated -->)", re.S
)

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
        "stream": f"true, partial_images {rules.partial_images[0]}-{rules.partial_images[1]} ([Streaming](streaming.md))" if rules.partial_images else "-",
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
    return f"Status as of {today}: Azure's state of each family {held}, the dates in the table."


# --- settings: shared/settings.py -----------------------------------------------------------------

_WHERE = {"app": "set by the templates", "optional": "optional", "yours": "yours (the templates leave it out)", "local": "local only", "platform": "set by Azure"}


def render_settings(today: dt.date) -> str:
    """Every setting of the Settings model: environment name (the field's alias) and field, default, where it is set, what it does."""
    lines = ["| Setting (field) | Default | In Azure | What |", "|---|---|---|---|"]
    fields = {str(field.alias): name for name, field in Settings.model_fields.items()}
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "—"
        what = setting.doc.replace("|", "\\|").replace("<", "&lt;")  # <path> would be an HTML tag
        lines.append(f"| `{setting.name}` (`{fields[setting.name]}`) | {default} | {_WHERE[setting.deploy]} | {what} |")
    return "\n".join(lines)


# --- roles: docs/roles.py, from the templates' role assignments (docs/templates.py) ----------------

RENDERERS: dict[str, Renderer] = {"models": render_models, "settings": render_settings, "roles": render_roles}
DATED = frozenset({"models"})  # regions that show a state on a day, stamped "as of DAY"


# --- regions ----------------------------------------------------------------------------------------


def regions(text: str) -> list[tuple[str, str]]:
    """(name, body) of every generated region of a Markdown text, in order."""
    return [(match["name"], match["body"]) for match in _REGION.finditer(text)]


def _renderer(name: str) -> Renderer:
    renderer = RENDERERS.get(name)
    if renderer is None:
        raise ValueError(f"no renderer for the generated region {name!r}; known: {', '.join(sorted(RENDERERS))}")
    return renderer


def _stamp(match: re.Match[str]) -> dt.date | None:
    """The day a dated region shows; ValueError for a dated region without one, or a stamp on one that is not dated."""
    name, day = match["name"], match["day"]
    if (name in DATED) != (day is not None):
        raise ValueError(f"the generated region {name!r} {'needs a stamp' if name in DATED else 'takes no stamp'}: <!-- generated: {name} as of YYYY-MM-DD -->")
    return dt.date.fromisoformat(day) if day else None


def _as_shown(match: re.Match[str]) -> str:
    """What the region must hold: its renderer's text for the day it is stamped with."""
    return _renderer(match["name"])(_stamp(match) or dt.date.min).rstrip() + "\n"


def moved_on(match: re.Match[str], today: dt.date) -> bool:
    """True when a dated region's state on ``today`` differs from the one on its stamp (a lifecycle date passed)."""
    stamped = _stamp(match)
    if stamped is None or stamped >= today:
        return False
    render = _renderer(match["name"])
    return _without_stamp(render(stamped)) != _without_stamp(render(today))


def _without_stamp(text: str) -> str:
    return re.sub(r"as of \d{4}-\d{2}-\d{2}", "as of DAY", text)


def regenerate(text: str, today: dt.date) -> str:
    """The text with every region rendered anew from its data; a dated region's stamp moves to ``today`` only if its state did."""

    def render(match: re.Match[str]) -> str:
        opening = match["open"]
        if moved_on(match, today):
            opening = opening.replace(f"as of {match['day']}", f"as of {today}")
            match = _REGION.fullmatch(opening + match["body"] + match["close"])  # type: ignore[assignment]
        return opening + _as_shown(match) + match["close"]

    return _REGION.sub(render, text)


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def stale(paths: Iterable[Path], today: dt.date | None = None) -> list[str]:
    """'file: region' for each region whose text differs from what its data gives (for its stamped day): these fail --check."""
    return [f"{_shown(path)}: {match['name']}" for path in paths for match in _REGION.finditer(path.read_text(encoding="utf-8")) if match["body"] != _as_shown(match)]


def behind(paths: Iterable[Path], today: dt.date) -> list[str]:
    """'file: region (as of DAY)' for each dated region whose state has changed since its stamp: a note, never a failure."""
    return [
        f"{_shown(path)}: {match['name']} (as of {match['day']})"
        for path in paths for match in _REGION.finditer(path.read_text(encoding="utf-8")) if moved_on(match, today)
    ]  # fmt: skip


def main(argv: list[str] | None = None, files: Iterable[Path] = FILES) -> int:
    """The command line; ``files`` are the Markdown files it reads (tests give others)."""
    parser = argparse.ArgumentParser(prog="python -m docs.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report regions that differ from their data, write nothing (exit 1 if any)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.datetime.now(dt.UTC).date(), help="the day taken for today")
    args = parser.parse_args(argv)
    files = list(files)
    if args.check:
        for where in behind(files, args.today):
            print(f"note: {where}: the state shown has changed since; `python -m docs.generate` moves it to {args.today}", file=sys.stderr)
        differing = stale(files)
        for where in differing:
            print(f"out of date: {where} (run python -m docs.generate)", file=sys.stderr)
        return 1 if differing else 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        updated = regenerate(text, args.today)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
