"""Broker knowledge stays in ``saras/brokers/`` (issue 8, the spine).

Services, repositories, tasks, flows and the CLI ask a connection's capabilities (fractional,
lot rules, paper or live, market window, AMO) instead of branching on its broker: no comparison
of a ``broker_type`` with a broker's name (``"zerodha"``, ``BrokerType.ZERODHA``) and no
``match`` on ``BrokerType`` outside the kits. ``ALLOWED`` names the few that are selection, not
behaviour; it only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = (
    "saras/domain",
    "saras/marketdata",
    "saras/services",
    "saras/repositories",
    "tasks",
    "flows",
    "saras/cli.py",
)
BROKER_NAMES = {"paper", "alpaca", "zerodha", "PAPER", "ALPACA", "ZERODHA"}

#: (file, line text) that may name a broker: the demo seeds and finds its own paper connections
ALLOWED = {
    ("saras/services/demo.py", "UserBrokerConnection.broker_type == BrokerType.PAPER.value,"),
}


def _names_a_broker(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in BROKER_NAMES
    if isinstance(node, ast.Attribute):  # BrokerType.ZERODHA or BrokerType.ZERODHA.value
        inner = node.value if node.attr == "value" else node
        return (
            isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == "BrokerType"
            and inner.attr in BROKER_NAMES
        )
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_broker(e) for e in node.elts)
    return False


def _is_broker_type(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return "broker_type" in text or text.startswith("BrokerType(")


def branches_in(source: str) -> list[tuple[int, str]]:
    """List (line, code) of every broker-type branch in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_broker_type(s) for s in sides) and any(_names_a_broker(s) for s in sides):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Match):
            cases = [c.pattern for c in node.cases]
            if any("BrokerType." in ast.unparse(p) for p in cases):
                found.append((node.lineno, ast.unparse(node.subject)))
    return found


def broker_branches() -> list[tuple[str, str]]:
    """List (file, line text) of every broker-type branch outside the broker kits."""
    found = []
    for scanned in SCANNED:
        root = ROOT / scanned
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            lines = path.read_text().splitlines()
            for lineno, _ in branches_in(path.read_text()):
                found.append((path.relative_to(ROOT).as_posix(), lines[lineno - 1].strip()))
    return found


def test_no_service_branches_on_the_broker() -> None:
    found = set(broker_branches())
    assert found - ALLOWED == set(), "ask the broker's capabilities instead"


def test_the_allow_list_names_only_branches_still_there() -> None:
    assert ALLOWED - set(broker_branches()) == set(), "shrink ALLOWED"


def test_the_scan_sees_a_branch() -> None:
    source = (
        "def f(c, b):\n"
        "    if c.broker_type == 'zerodha':\n"
        "        return 1\n"
        "    if BrokerType.ALPACA.value != c.broker_type:\n"
        "        return 2\n"
        "    match BrokerType(b):\n"
        "        case BrokerType.PAPER:\n"
        "            return 3\n"
        "    return c.broker_type == other\n"
    )
    assert sorted(line for line, _ in branches_in(source)) == [2, 4, 6]
