"""The benchmark keeps working: a tiny run end to end, checked for shape only (no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import METRICS

ROOT = Path(__file__).resolve().parent.parent

# Metrics measured for both implementations; the cold start, the raised-cap variant, the pools, the upload, the views and streams are the service's alone.
BOTH = {m for m in METRICS if m != "cold_start_ratio" and not m.endswith("_at_cap") and not m.startswith(("pool_", "upload_", "views_", "stream_"))}


@pytest.mark.slow  # the slowest test (a whole benchmark run): CI runs it with `dev.py test -m slow`
def test_smoke_run_writes_every_metric(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["size"]["name"] == "smoke"
    assert set(data["machine"]) >= {"cpus", "cpu_model", "memory_total_gib", "python"}
    assert set(data["metrics"]) == set(METRICS)
    for key, metric in data["metrics"].items():
        assert set(metric) >= {"label", "target", "service", "naive", "met"}, key
        implementations = ("service", "naive") if key in BOTH else ("service",)
        for impl in implementations:
            value = metric[impl]
            assert isinstance(value, int | float) and math.isfinite(value), (key, impl, value)
        assert isinstance(metric["met"], bool), key
    for section in ("overhead", "concurrency", "queue", "cold_start", "pool", "upload", "views", "stream"):
        assert section in data["results"], section
    assert "| metric | target | service | naive | met |" in done.stdout
