"""The generated tables of the Markdown files are what their data gives on today's date (docs/generate.py).

One test covers every region of every file: a region whose text differs from its renderer's fails
here, naming the file and the region. The models table shows each family's state on the day, so it
goes stale on the day Azure's dates change a state (a model retires): then `python -m docs.generate`
rewrites it. The generator itself is tested on files of its own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from docs.generate import FILES, RENDERERS, main, regenerate, regions, render_models, stale
from shared.models import CHECKED, TABLE, lifecycle_state


def test_every_generated_region_is_what_its_data_gives_today() -> None:
    today = dt.datetime.now(dt.UTC).date()
    found = {name for path in FILES for name, _ in regions(path.read_text(encoding="utf-8"))}
    assert "models" in found, "README.md holds the models region"
    assert found <= set(RENDERERS)
    assert stale(FILES, today) == [], "out of date: run python -m docs.generate"


def test_the_models_table_shows_each_familys_state_on_the_day() -> None:
    before, after = render_models(dt.date(2027, 4, 6)), render_models(dt.date(2027, 4, 7))
    assert "| gpt-image-1-mini | no new customers |" in before and "| gpt-image-1-mini | retired |" in after
    assert "from 2026-10-23 until 2027-04-07" in before and "from 2027-04-07 until 2027-06-16" in after
    today = render_models(CHECKED)
    for row in TABLE:
        assert f"| {row.name} |" in today
    assert "| gpt-image-1.5 | GA | - | 2027-06-16 |" in today and "| gpt-image-2 | GA | - | 2027-10-21 |" in today
    assert "| dall-e-3 | retired |" in today and "| gpt-image-1 | retired |" in today
    assert "| gpt-image-2.5-flare | OpenAI only" in today and lifecycle_state(TABLE[-1], CHECKED) == "openai-only"


def test_the_generator_rewrites_stale_regions_and_leaves_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    text = "# Title\n\nprose\n\n<!-- generated: models (note) -->\nold table\n<!-- end generated -->\n\nmore prose\n"
    page.write_text(text, encoding="utf-8")
    day = dt.date(2026, 12, 6)
    assert main(["--check", "--today", day.isoformat()], files=[page]) == 1
    assert "page.md: models" in capsys.readouterr().err
    assert main(["--today", day.isoformat()], files=[page]) == 0
    updated = page.read_text(encoding="utf-8")
    assert updated.startswith("# Title\n\nprose\n\n<!-- generated: models (note) -->\n") and updated.endswith("<!-- end generated -->\n\nmore prose\n")
    assert dict(regions(updated))["models"] == render_models(day) + "\n"
    assert main(["--check", "--today", day.isoformat()], files=[page]) == 0
    assert regenerate(updated, day) == updated


def test_a_region_without_a_renderer_is_an_error() -> None:
    with pytest.raises(ValueError, match="no renderer for the generated region 'nothing'"):
        regenerate("<!-- generated: nothing -->\nx\n<!-- end generated -->\n", dt.date(2026, 12, 6))
