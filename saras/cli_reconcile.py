"""``saras reconcile``: differences with the brokers and corporate actions, accepted by command."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from saras.errors import InvalidInputError, NotFoundError, SarasError

app = typer.Typer(
    help="Reconciliation with the brokers: differences, corporate actions, explicit acceptance.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _engine() -> Any:
    from saras.db import get_engine

    return get_engine()


def _refuse(message: str) -> None:
    """Bad input: one line on stderr naming the culprit, exit code 2, nothing written."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _print(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(list(rows), default=str, indent=2))
        return
    if not rows:
        typer.echo("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    typer.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


@app.command("differences")
def differences(
    all_: Annotated[
        bool, typer.Option("--all", help="Include resolved and accepted differences.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the differences between our ledger and the brokers (open ones by default)."""
    from saras.services import reconcile

    found = reconcile.list_differences(_engine(), include_closed=all_)
    _print([d.as_row() for d in found], as_json)


@app.command("accept")
def accept(
    difference_id: Annotated[str, typer.Argument(help="The difference's id (see `differences`).")],
    investment: Annotated[
        str | None,
        typer.Option(help="The investment that takes it, when the connection has several."),
    ] = None,
    by: Annotated[str, typer.Option(help="Who accepts it (kept in the audit trail).")] = "cli",
    as_json: JsonOpt = False,
) -> None:
    """Accept a difference into the ledger: the broker's figure becomes ours (never silently)."""
    from saras.services import reconcile

    try:
        done = reconcile.accept(_engine(), difference_id, investment_id=investment, accepted_by=by)
    except (InvalidInputError, NotFoundError) as exc:
        _refuse(str(exc))
        return
    row = {
        "difference": done.difference_id,
        "investment": done.investment_id,
        "kind": done.kind,
        "quantity_delta": f"{done.quantity_delta.normalize():f}",
        "cash_delta": f"{done.cash_delta.normalize():f}",
    }
    _print([row], as_json)


@app.command("actions")
def actions(
    pending: Annotated[bool, typer.Option("--pending", help="Only actions not applied.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the corporate actions Saras knows (splits, bonus issues, dividends)."""
    from saras.services import reconcile

    _print(reconcile.list_actions(_engine(), pending_only=pending), as_json)


@app.command("apply-action")
def apply_action(
    action_id: Annotated[str, typer.Argument(help="The action's id (see `actions`).")],
    as_json: JsonOpt = False,
) -> None:
    """Apply a detected corporate action to the ledger now (e.g. an inferred split, confirmed)."""
    from saras.services.corporate_actions import apply_action as apply

    try:
        key = uuid.UUID(action_id.strip())
    except ValueError:
        _refuse(f"action {action_id!r} is not an id")
        return
    try:
        done = apply(_engine(), key)
    except SarasError as exc:
        _refuse(str(exc))
        return
    row = {
        "action": str(done.action_id),
        "symbol": done.symbol,
        "exchange": done.exchange,
        "type": done.action_type,
        "investments": done.investments,
        "quantity_added": f"{done.quantity_added.normalize():f}",
        "cash": f"{done.cash.normalize():f}",
    }
    _print([row], as_json)


@app.command("dismiss-action")
def dismiss_action(
    action_id: Annotated[str, typer.Argument(help="The action's id (see `actions`).")],
) -> None:
    """Dismiss a detected corporate action that is not one (e.g. a wrongly inferred split)."""
    from saras.services.corporate_actions import dismiss_action as dismiss

    try:
        key = uuid.UUID(action_id.strip())
    except ValueError:
        _refuse(f"action {action_id!r} is not an id")
        return
    try:
        dismiss(_engine(), key)
    except SarasError as exc:
        _refuse(str(exc))
        return
    typer.echo(f"dismissed {key}")


__all__ = ["app"]
