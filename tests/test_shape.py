"""The shape of the code, kept: small modules in shared/, small functions everywhere but the simulator.

The simulator (local/simulator.py) is exempt on purpose: it re-implements the model
service's rules in long, literal request checks that read best as one piece.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
EXEMPT = {ROOT / "local" / "simulator.py"}


def _python_files() -> list[Path]:
    skip = {".venv", ".venv-checkov", "node_modules", ".git"}
    return [p for p in sorted(ROOT.rglob("*.py")) if not skip.intersection(p.relative_to(ROOT).parts) and p not in EXEMPT]


def test_no_module_in_shared_is_over_the_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "shared").rglob("*.py") if (n := p.read_text().count("\n")) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: split them by concern"


def test_no_function_is_over_the_limit() -> None:
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == [], "functions over the limit:\n" + "\n".join(long)


def test_the_checks_see_the_code() -> None:
    files = _python_files()
    assert ROOT / "shared" / "__init__.py" in files and ROOT / "function_app.py" in files
    assert ROOT / "local" / "simulator.py" not in files
