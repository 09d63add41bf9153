"""The generated tables of the Markdown pages are what their data gives (docs/generate.py).

One test covers every region of every page: a region whose text differs from its renderer's fails
here, naming the page and the region. A table that shows a state on a day (the models' lifecycle)
is stamped with that day and checked for it, so this test cannot fail because a date passed; that
the stamp fell behind a lifecycle date is a note of ``--check``, and ``python -m docs.generate``
moves it. The generator itself is tested on pages of its own.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from docs.generate import FILES, RENDERERS, behind, main, regenerate, regions, render_models, render_settings, stale
from shared.models import CHECKED, TABLE, lifecycle_state
from shared.settings import SETTINGS, Settings

PAGE = "# Title\n\nprose\n\n<!-- generated: models as of {day} (note) -->\n{body}<!-- end generated -->\n\nmore prose\n"


def test_every_generated_region_is_what_its_data_gives() -> None:
    found = {name for path in FILES for name, _ in regions(path.read_text(encoding="utf-8"))}
    assert {"models", "settings", "roles"} <= found, "the pages hold the generated tables"
    assert found <= set(RENDERERS)
    assert stale(FILES) == [], "out of date: run python -m docs.generate"


def test_each_table_has_one_place() -> None:
    """One copy of each table: a second region of the same name would be a copy to keep."""
    names = [name for path in FILES for name, _ in regions(path.read_text(encoding="utf-8"))]
    assert len(names) == len(set(names)), names


def test_the_models_table_shows_each_familys_state_on_the_day() -> None:
    before, after = render_models(dt.date(2027, 4, 6)), render_models(dt.date(2027, 4, 7))
    assert "| gpt-image-1-mini | no new customers |" in before and "| gpt-image-1-mini | retired |" in after
    assert "from 2026-10-23 until 2027-04-07" in before and "from 2027-04-07 until 2027-06-16" in after
    assert "Status as of 2027-04-06" in before
    today = render_models(CHECKED)
    for row in TABLE:
        assert f"| {row.name} |" in today
    assert "| gpt-image-1.5 | GA | - | 2027-06-16 |" in today and "| gpt-image-2 | GA | - | 2027-10-21 |" in today
    assert "| dall-e-3 | retired |" in today and "| gpt-image-1 | retired |" in today
    assert "| stream | - | true, partial_images 0-3 " in today, "which families stream, from their rows"
    assert "| gpt-image-2.5-flare | OpenAI only" in today and lifecycle_state(TABLE[-1], CHECKED) == "openai-only"


def test_the_settings_table_is_the_settings_model() -> None:
    """Every field of Settings, in order: its environment name (alias), field name, default and description."""
    rows = re.findall(r"(?m)^\| `([^`]+)` \(`(\w+)`\) \| (.*?) \| (.*?) \| (.*) \|$", render_settings(CHECKED))
    fields = {str(f.alias): name for name, f in Settings.model_fields.items()}
    assert [(name, field) for name, field, *_ in rows] == [(s.name, fields[s.name]) for s in SETTINGS]
    assert [default.strip("`") for _, _, default, _, _ in rows] == [s.default or "—" for s in SETTINGS]
    assert [doc.replace("\\|", "|").replace("&lt;", "<") for *_, doc in rows] == [s.doc for s in SETTINGS]


def test_a_dated_region_is_checked_for_its_stamp_not_for_today(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table as of 2027-04-06 stays valid on 2027-04-08 (gpt-image-1-mini retired on the 7th): a note, not a failure."""
    page = tmp_path / "page.md"
    stamped = dt.date(2027, 4, 6)
    page.write_text(PAGE.format(day=stamped, body=render_models(stamped) + "\n"), encoding="utf-8")
    later = dt.date(2027, 4, 8)
    assert stale([page]) == [] and main(["--check", "--today", later.isoformat()], files=[page]) == 0
    assert "page.md: models (as of 2027-04-06): the state shown has changed" in capsys.readouterr().err
    assert behind([page], dt.date(2027, 4, 6)) == [] and behind([page], later) == [f"{page}: models (as of 2027-04-06)"]
    # Regenerating moves the stamp only because the state moved; a day with nothing new keeps it.
    assert regenerate(page.read_text(encoding="utf-8"), dt.date(2027, 4, 6)) == page.read_text(encoding="utf-8")
    assert main(["--today", later.isoformat()], files=[page]) == 0
    moved = page.read_text(encoding="utf-8")
    assert "<!-- generated: models as of 2027-04-08 (note) -->" in moved and "| gpt-image-1-mini | retired |" in moved
    assert regenerate(moved, dt.date(2027, 5, 1)) == moved, "nothing changed between the 8th and May 1st"


def test_the_generator_rewrites_a_stale_region_and_leaves_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    day = dt.date(2026, 12, 6)
    page.write_text(PAGE.format(day=day, body="old table\n"), encoding="utf-8")
    assert main(["--check", "--today", day.isoformat()], files=[page]) == 1
    assert "page.md: models" in capsys.readouterr().err
    assert main(["--today", day.isoformat()], files=[page]) == 0
    updated = page.read_text(encoding="utf-8")
    assert updated.startswith("# Title\n\nprose\n\n<!-- generated: models as of 2026-12-06 (note) -->\n") and updated.endswith("<!-- end generated -->\n\nmore prose\n")
    assert dict(regions(updated))["models"] == render_models(day) + "\n"
    assert main(["--check", "--today", day.isoformat()], files=[page]) == 0


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("<!-- generated: nothing -->\nx\n<!-- end generated -->\n", "no renderer for the generated region 'nothing'"),
        ("<!-- generated: models -->\nx\n<!-- end generated -->\n", "'models' needs a stamp"),
        ("<!-- generated: settings as of 2026-12-06 -->\nx\n<!-- end generated -->\n", "'settings' takes no stamp"),
    ],
)
def test_a_region_without_a_renderer_or_with_a_wrong_stamp_is_an_error(region: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regenerate(region, dt.date(2026, 12, 6))
