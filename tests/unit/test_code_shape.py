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

#: (file, function) pairs allowed over the limit: none left
ALLOWED: set[tuple[str, str]] = set()


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
    (tmp_path / "long.py").write_text(
        f"def long() -> None:\n{body}\n\n\ndef short() -> None:\n    pass\n"
    )
    assert long_functions_in(tmp_path / "long.py") == [("long", MAX_LINES + 1)]


#: public functions in tasks/ that are not tasks, with why; shrink only
NOT_TASKS = {
    # task support: the flow run id a task records in its rows
    ("tasks/common.py", "current_flow_run_id"),
}


def _task_decorator(node: ast.FunctionDef) -> ast.expr | None:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id == "task":
            return decorator
    return None


def _top_level_functions(folder: str) -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted((ROOT / folder).glob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                found.append((name, node))
    return found


def test_tasks_holds_only_tasks_each_with_a_cache_policy() -> None:
    not_tasks, no_policy = set(), set()
    for name, node in _top_level_functions("tasks"):
        if name == "tasks/__init__.py" or node.name.startswith("_"):
            continue  # the package's decorator helpers; private helpers of one task
        decorator = _task_decorator(node)
        if decorator is None:
            not_tasks.add((name, node.name))
        elif not isinstance(decorator, ast.Call) or not any(
            k.arg == "cache_policy" for k in decorator.keywords
        ):
            no_policy.add((name, node.name))
    assert not_tasks - NOT_TASKS == set(), "move what is not a task to flows/kit or saras/"
    assert no_policy == set(), "name the cache policy (NO_CACHE if it writes)"
    assert NOT_TASKS - not_tasks == set(), "shrink"


def test_flows_define_no_tasks() -> None:
    defined = [
        (name, node.name)
        for name, node in _top_level_functions("flows")
        if _task_decorator(node) is not None
    ]
    assert defined == [], "tasks live in tasks/"


#: imports from saras/ of what sits above it, with why; shrink only
UPWARD_IMPORTS = {
    # ``saras demo`` runs the flows: imported when the command runs, never at import
    ("saras/cli.py", "flows.demo"),
}


def test_saras_imports_neither_prefect_nor_the_flows_and_tasks_above_it() -> None:
    upward = set()
    for path in sorted((ROOT / "saras").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            upward |= {
                (name, m) for m in modules if m.split(".")[0] in {"prefect", "flows", "tasks"}
            }
    assert upward - UPWARD_IMPORTS == set()
    assert UPWARD_IMPORTS - upward == set(), "shrink UPWARD_IMPORTS"


#: the files every broker kit has (``saras/brokers/<name>/``): one shape, read alike
KIT_FILES = {
    "__init__.py",
    "capabilities.py",
    "config.py",
    "costs.py",
    "data.py",
    "errors.py",
    "execution.py",
    "parsing.py",
}
BROKER_NAMES = {"alpaca", "zerodha", "paper"}


def test_every_broker_kit_has_the_same_files() -> None:
    kits = [p for p in (ROOT / "saras" / "brokers").iterdir() if (p / "__init__.py").exists()]
    shapes = {p.name: {f.name for f in p.glob("*.py")} for p in kits if p.name != "kit"}
    assert set(shapes) == BROKER_NAMES
    assert {name: files for name, files in shapes.items() if files != KIT_FILES} == {}
