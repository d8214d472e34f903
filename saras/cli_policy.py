"""``saras smallcases policy set|show``: a smallcase's stored rebalance policy.

Registered on the ``smallcases`` group by ``saras.cli``::

    from saras.cli_policy import app as policy_app
    smallcases_app.add_typer(policy_app, name="policy")
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from saras.errors import InvalidInputError, NotFoundError, SarasError

app = typer.Typer(
    help="Show or set a smallcase's rebalance policy (bands, minimums, cooldown, triggers).",
    no_args_is_help=True,
)

#: exit code of refused input (the public interface: one line on stderr, exit 2)
BAD_INPUT = 2


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _value(text: str) -> Any:
    """Read a value: JSON when it parses (numbers stay exact as strings), else the text."""
    lowered = text.strip().lower()
    if lowered in {"", "none", "null"}:
        return None
    if lowered in {"true", "false"}:
        return lowered == "true"
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, parse_float=str, parse_int=str)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{text!r} is not valid JSON: {exc.msg}") from exc
    return text.strip()


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Turn ``key=value`` (and ``min_trade_value.INR=500``) arguments into policy changes."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"policy: expected key=value, got {item!r}")
        field, dot, currency = key.partition(".")
        if dot:
            if field != "min_trade_value" or not currency:
                raise InvalidInputError(
                    f"policy: only min_trade_value.<CURRENCY>=<amount> takes a dot, got {key!r}"
                )
            changes.setdefault("min_trade_value", {})[currency.upper()] = _value(raw)
        else:
            changes[field] = _value(raw)
    return changes


def _show(policy_record: dict[str, Any], name: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"smallcase": name, "policy": policy_record}, indent=2))
        return
    typer.echo(f"policy of {name}")
    width = max(len(k) for k in policy_record)
    for key, value in policy_record.items():
        if isinstance(value, dict):
            value = ", ".join(f"{c} {v}" for c, v in sorted(value.items()))
        typer.echo(f"  {key.ljust(width)}  {'-' if value is None else value}")


@app.command("show")
def show(
    smallcase: Annotated[str, typer.Argument(help="Smallcase name or id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show a smallcase's rebalance policy (defaults where nothing was set)."""
    from saras.db import session_scope
    from saras.services import admin
    from saras.services import policy as service

    try:
        with session_scope() as session:
            row = admin.get_smallcase(session, smallcase)
            record = service.stored_policy(row).as_record()
            name = row.name
    except (InvalidInputError, NotFoundError) as exc:
        _fail(str(exc), BAD_INPUT)
    except SarasError as exc:
        _fail(str(exc))
    _show(record, name, as_json)


@app.command("set")
def set_(
    smallcase: Annotated[str, typer.Argument(help="Smallcase name or id.")],
    assignments: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "key=value pairs, e.g. relative_drift_band_pct=25 cooldown_days=7 "
                "calendar_trigger=monthly min_trade_value.INR=1000 drift_band_pct=none."
            )
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Start from the defaults instead of the stored policy.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Change a smallcase's rebalance policy; a refused value changes nothing."""
    from saras.db import session_scope
    from saras.services import admin
    from saras.services import policy as service

    try:
        changes = parse_assignments(assignments or [])
        with session_scope() as session:
            row = admin.get_smallcase(session, smallcase)
            record = service.set_policy(session, row, changes, reset=reset).as_record()
            name = row.name
    except (InvalidInputError, NotFoundError) as exc:
        _fail(str(exc), BAD_INPUT)
    except SarasError as exc:
        _fail(str(exc))
    _show(record, name, as_json)
