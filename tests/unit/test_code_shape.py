"""The code's shape: no function in ``saras/`` longer than 80 lines, outside the planner.

The vectorised planner (``saras/domain/rebalance.py``) is exempt by design: its long functions
are array programs read top to bottom. ``ALLOWED`` names the functions that still exceed the
limit in files other work owns; it only shrinks. A new long function anywhere else fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 80
EXEMPT_FILES = {"saras/domain/rebalance.py"}

#: (file, function) pairs still over the limit, owned by other work in flight; shrink only
ALLOWED = {
    ("saras/brokers/paper.py", "_advance"),
    ("saras/services/execution.py", "execute_run"),
    ("saras/services/rebalance.py", "plan_smallcase"),
    ("saras/services/rebalance.py", "_collect"),
    ("saras/services/rebalance.py", "write_plan"),
    ("saras/testing/fake_alpaca.py", "_create_order"),
}


def long_functions_in(path: Path) -> list[tuple[str, int]]:
    """List (function, lines) for every function in one file over ``MAX_LINES``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found.append((node.name, lines))
    return found


def long_functions() -> list[tuple[str, str, int]]:
    """List (file, function, lines) for every over-long function in ``saras/``."""
    found = []
    for path in sorted((ROOT / "saras").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name not in EXEMPT_FILES:
            found.extend((name, function, lines) for function, lines in long_functions_in(path))
    return found


def test_no_new_function_is_longer_than_80_lines() -> None:
    over = {(name, function): lines for name, function, lines in long_functions()}
    new = {key: lines for key, lines in over.items() if key not in ALLOWED}
    assert not new, f"functions over {MAX_LINES} lines: {new}"


def test_the_allow_list_names_only_functions_still_too_long() -> None:
    over = {(name, function) for name, function, _ in long_functions()}
    assert not ALLOWED - over, f"shrink ALLOWED: {sorted(ALLOWED - over)} are short now"


def test_the_measure_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def long() -> None:\n{body}\n\n\ndef short() -> None:\n    pass\n")
    assert long_functions_in(tmp_path / "long.py") == [("long", MAX_LINES + 1)]
