"""The ``saras`` console command: database, admin, keys and the demo.

Errors are handled in one place, ``SarasGroup.invoke``: every command (including those added
later with ``app.add_typer``) gets it for free. Bad input is one line on stderr naming the field
and the value, exit code 2, nothing written (the command's transaction rolls back); any other
refusal is one line and exit code 1; ``saras --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.core import TyperGroup

from saras.cli_policy import app as policy_app
from saras.cli_reconcile import app as reconcile_app
from saras.errors import ConnectionSelectionError, InvalidInputError, NotFoundError, SarasError

#: exit code for bad input (typer's and click's convention for usage errors)
EXIT_BAD_INPUT = 2
#: exit code for anything else Saras refuses (no key configured, database unreachable)
EXIT_REFUSED = 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _refusal_types() -> tuple[type[BaseException], ...]:
    """The exception classes the CLI reports as refusals (imported only when one is raised)."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    from saras.marketdata.base import SourceConfigError
    from saras.secrets import SecretKeyError

    return (
        SarasError,
        ValidationError,
        SourceConfigError,
        SecretKeyError,
        IntegrityError,
        DataError,
        OperationalError,
    )


def _refusal(exc: BaseException) -> tuple[int, str] | None:
    """Return (exit code, message) for an error the CLI reports, or None for a real bug."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    from saras.domain.inputs import describe
    from saras.marketdata.base import SourceConfigError
    from saras.secrets import SecretKeyError

    if isinstance(exc, InvalidInputError | NotFoundError | ConnectionSelectionError):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, ValidationError):
        return EXIT_BAD_INPUT, describe(exc)
    if isinstance(exc, SourceConfigError):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, IntegrityError | DataError):
        # a rule the application checks missed: still one line, still nothing written
        detail = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        return EXIT_BAD_INPUT, f"the database refused the input: {detail}"
    if isinstance(exc, SecretKeyError | SarasError):
        return EXIT_REFUSED, str(exc)
    if isinstance(exc, OperationalError):
        detail = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        return EXIT_REFUSED, f"the database is not usable: {detail}"
    return None


class SarasGroup(TyperGroup):
    """The command group that turns refusals into one line on stderr and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click Context
        """Run the command; report a refusal in one line unless ``--debug`` was given."""
        try:
            return super().invoke(ctx)
        except _refusal_types() as exc:
            refusal = _refusal(exc)
            if refusal is None or ctx.params.get("debug"):
                raise
            code, message = refusal
            typer.secho(f"error: {_one_line(message)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=SarasGroup,
    help="Saras: the batch side of a multi-broker smallcase platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="SARAS_DEBUG", help="Show tracebacks instead of one line."),
    ] = False,
) -> None:
    """Saras: the batch side of a multi-broker smallcase platform."""
    from saras.settings import check_private_files

    check_private_files(_checked_settings())


def _checked_settings() -> Any:
    """Read the settings and check what every command needs of them, each refusal one line.

    An unreadable ``SARAS_*`` value, a database URL that is none (or of a database Saras does
    not run on), a data directory that is a file or cannot be created: exit 1, no traceback.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from saras.settings import get_settings, private_dir

    try:
        settings = get_settings()
    except SettingsError as exc:
        raise SarasError(f"settings: {exc}") from exc
    except ValidationError as exc:  # a value of the wrong kind: named, never echoed
        problems = "; ".join(
            f"SARAS_{'_'.join(str(part) for part in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise SarasError(f"settings: {problems}") from None
    try:  # never echo the URL: a mistyped one may still hold a password
        backend = make_url(settings.resolved_database_url()).get_backend_name()
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is no number
        raise SarasError("SARAS_DATABASE_URL is not a database URL") from None
    if backend not in ("postgresql", "sqlite"):
        raise SarasError(
            f"SARAS_DATABASE_URL: Saras runs on PostgreSQL (postgresql://...) or, unset, on "
            f"its embedded SQLite database, not on {backend}"
        )
    if settings.embedded:
        try:
            private_dir(settings.data_dir)
        except OSError as exc:
            raise SarasError(
                f"SARAS_DATA_DIR {str(settings.data_dir)!r}: not a usable directory "
                f"({exc.strerror or exc})"
            ) from exc
    return settings


db_app = typer.Typer(
    help="Migrate the database (Alembic history in migrations/).", no_args_is_help=True
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
assets_app = typer.Typer(help="Manage the asset master.", no_args_is_help=True)
connections_app = typer.Typer(help="Manage users' broker connections.", no_args_is_help=True)
portfolios_app = typer.Typer(help="Manage portfolios.", no_args_is_help=True)
smallcases_app = typer.Typer(help="Manage smallcases and their constituents.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the keys that encrypt broker secrets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(assets_app, name="assets")
app.add_typer(connections_app, name="connections")
app.add_typer(portfolios_app, name="portfolios")
app.add_typer(smallcases_app, name="smallcases")
smallcases_app.add_typer(policy_app, name="policy")
app.add_typer(keys_app, name="keys")
app.add_typer(reconcile_app, name="reconcile")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _fail(message: str) -> None:
    raise InvalidInputError(message)


@contextmanager
def _session() -> Iterator[Session]:
    from saras.db import session_scope

    with session_scope() as session:
        yield session


def _print_rows(rows: Sequence[dict[str, Any]], as_json: bool) -> None:
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


#: the largest file a command reads (a constituents CSV of thousands of rows is ~100 KiB)
MAX_INPUT_BYTES = 10 * 1024 * 1024


def _read_text(option: str, path: Path) -> str:
    """Read a text file a user named (UTF-8, with or without the BOM spreadsheets write)."""
    try:
        with path.open("rb") as file:  # never more than the limit: /dev/zero is a file too
            data = file.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"{option} {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInputError(
            f"{option} {str(path)!r}: larger than {MAX_INPUT_BYTES // 2**20} MiB"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{option} {str(path)!r}: not UTF-8 text") from None


# --- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the database to a revision (default: head)."""
    from saras import migrations
    from saras.settings import get_settings

    with _revision(revision):
        migrations.upgrade(revision)
    typer.echo(f"database at {migrations.current_revision()} ({_where(get_settings())})")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or base.")],
) -> None:
    """Downgrade the database to a revision (``base`` removes every table)."""
    from saras import migrations

    with _revision(revision):
        migrations.downgrade(revision)
    typer.echo(f"database at {migrations.current_revision() or 'base'}")


@contextmanager
def _revision(revision: str) -> Iterator[None]:
    """Report a revision Alembic cannot find (or reach) as bad input naming it."""
    from alembic.util.exc import CommandError

    try:
        yield
    except CommandError as exc:
        raise InvalidInputError(f"revision {revision!r}: {_one_line(str(exc))}") from exc


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision and the history's head."""
    from saras import migrations
    from saras.settings import get_settings

    typer.echo(f"database: {_where(get_settings())}")
    typer.echo(f"current:  {migrations.current_revision() or '(empty)'}")
    typer.echo(f"head:     {', '.join(migrations.head_revisions())}")


def _where(settings: Any) -> str:
    from sqlalchemy.engine import make_url

    if settings.embedded:
        return f"embedded SQLite at {settings.sqlite_path}"
    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


# --- users ------------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    email: str,
    first_name: Annotated[str | None, typer.Option()] = None,
    last_name: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user."""
    from saras.services import admin

    with _session() as s:
        user = admin.add_user(s, email, first_name, last_name)
        _print_rows([{"id": str(user.id), "email": user.email}], as_json)


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List users."""
    from models import User

    with _session() as s:
        rows = [
            {
                "id": str(u.id),
                "email": u.email,
                "name": f"{u.first_name or ''} {u.last_name or ''}".strip(),
            }
            for u in s.scalars(select(User).order_by(User.email))
        ]
    _print_rows(rows, as_json)


# --- assets -----------------------------------------------------------------------------------


@assets_app.command("add")
def assets_add(
    symbol: str,
    exchange: Annotated[str, typer.Option(help="NYSE, NASDAQ, NSE, BSE, ... (see README).")],
    currency: Annotated[str, typer.Option(help="The exchange's currency: USD or INR.")],
    name: Annotated[str | None, typer.Option()] = None,
    asset_type: Annotated[str, typer.Option()] = "equity",
    fractionable: Annotated[bool, typer.Option(help="Tradable in fractions (Alpaca).")] = False,
    lot_size: Annotated[int | None, typer.Option(help="Lot size (Kite).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add an asset to the asset master."""
    from saras.services import admin

    with _session() as s:
        a = admin.add_asset(
            s,
            symbol,
            exchange,
            currency,
            name,
            asset_type,
            fractionable=fractionable,
            lot_size=lot_size,
        )
        _print_rows([{"id": str(a.id), "symbol": a.symbol, "exchange": a.exchange}], as_json)


@assets_app.command("import")
def assets_import(
    user: Annotated[str, typer.Argument(help="The user's e-mail or id.")],
    alias: Annotated[str, typer.Argument(help="The connection whose broker lists the assets.")],
    symbol: Annotated[
        list[str] | None, typer.Option("--symbol", help="Only these symbols (repeatable).")
    ] = None,
    exchange: Annotated[
        str | None, typer.Option(help="Only this exchange (NSE, BSE, ...).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or refresh assets from a broker's own list (Alpaca assets, Kite instruments)."""
    from saras.db import get_engine
    from saras.domain.exchanges import EXCHANGES, UnknownExchange, check_code
    from saras.repositories.connections import select_connection
    from saras.services import admin
    from saras.services.asset_master import import_assets, list_broker_assets
    from saras.services.brokers import open_broker

    try:
        venue = check_code(exchange) if exchange else None
    except UnknownExchange as exc:
        raise InvalidInputError(f"--exchange {exchange!r}: {exc.reason}") from None
    with _session() as s:
        connection = select_connection(s, admin.get_user(s, user).id, alias=alias)
        broker = open_broker(get_engine(), connection)
        listed = list_broker_assets(broker, venue)
        # only exchanges of the exchange table (Alpaca lists some assets without a venue)
        known = [a for a in listed if a.exchange in EXCHANGES]
        counts = import_assets(s, known, symbol)
        _print_rows([{**vars(counts), "skipped": len(listed) - len(known)}], as_json)


@assets_app.command("list")
def assets_list(as_json: JsonOpt = False) -> None:
    """List assets."""
    from models import Asset

    with _session() as s:
        rows = [
            {
                "symbol": a.symbol,
                "exchange": a.exchange,
                "currency": a.currency,
                "name": a.name or "",
            }
            for a in s.scalars(select(Asset).order_by(Asset.exchange, Asset.symbol))
        ]
    _print_rows(rows, as_json)


# --- connections ------------------------------------------------------------------------------


@connections_app.command("add")
def connections_add(
    user: Annotated[str, typer.Argument(help="The user's e-mail or id.")],
    broker_type: Annotated[str, typer.Argument(help="paper, alpaca or zerodha.")],
    alias: Annotated[
        str | None, typer.Option(help="Default: <broker>_primary, <broker>_2, ...")
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="A live (real money) account; required for zerodha (Kite has no paper "
            "environment).",
        ),
    ] = False,
    metadata: Annotated[
        str | None, typer.Option(help='JSON endpoint overrides, e.g. {"base_url": "..."}')
    ] = None,
    secrets_from_stdin: Annotated[
        bool,
        typer.Option(
            "--secrets-from-stdin",
            help="Read a JSON object of secrets (api_key, api_secret, access_token) from stdin.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a broker connection; secrets come from the environment or stdin, never arguments.

    Environment: SARAS_BROKER_API_KEY, SARAS_BROKER_API_SECRET, SARAS_BROKER_ACCESS_TOKEN.
    """
    from saras.secrets import get_secret_box
    from saras.services import admin

    secrets: dict[str, str] = {}
    for name in ("api_key", "api_secret", "access_token"):
        value = os.environ.get(f"SARAS_BROKER_{name.upper()}")
        if value:
            secrets[name] = value
    if secrets_from_stdin:
        try:
            loaded = json.loads(sys.stdin.read() or "{}")
        except json.JSONDecodeError:
            _fail("stdin is not a JSON object of secrets")
        if not isinstance(loaded, dict):
            _fail("stdin is not a JSON object of secrets")
        secrets.update({str(k): str(v) for k, v in loaded.items()})
    try:
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError:
        _fail(f"--metadata {metadata!r}: not valid JSON")
    if not isinstance(meta, dict):
        _fail(f"--metadata {metadata!r}: not a JSON object")
    box = get_secret_box(generate=False) if secrets else None
    extra = {k: v for k, v in secrets.items() if k not in ("api_key", "api_secret")}
    with _session() as s:
        c = admin.add_connection(
            s,
            box,
            admin.get_user(s, user),
            broker_type,
            paper_trading=not live,
            alias=alias,
            api_key=secrets.get("api_key"),
            api_secret=secrets.get("api_secret"),
            credentials=extra or None,
            metadata=meta,
        )
        _print_rows([{"id": str(c.id), "alias": c.alias, "broker_type": c.broker_type}], as_json)


@connections_app.command("list")
def connections_list(as_json: JsonOpt = False) -> None:
    """List broker connections (secrets are never shown)."""
    from models import User, UserBrokerConnection
    from saras.repositories.connections import reaches_real_money

    with _session() as s:
        rows = [
            {
                "id": str(c.id),
                "user": email,
                "alias": c.alias,
                "broker_type": c.broker_type,
                # what the connection reaches, not the row's flag alone (an Alpaca row at
                # the live endpoint is live)
                "paper": not reaches_real_money(c),
                "status": c.status,
            }
            for c, email in s.execute(
                select(UserBrokerConnection, User.email)
                .join(User, User.id == UserBrokerConnection.user_id)
                .order_by(User.email, UserBrokerConnection.alias)
            )
        ]
    _print_rows(rows, as_json)


# connections update | check (issue 13: broker sessions; services in saras/services/connections.py)


@connections_app.command("update")
def connections_update(
    user: Annotated[str, typer.Argument(help="The user's e-mail or id.")],
    alias: Annotated[str, typer.Argument(help="The connection's alias, e.g. zerodha_primary.")],
    secrets_from_stdin: Annotated[
        bool, typer.Option("--secrets-from-stdin", help="Read a JSON object of secrets.")
    ] = False,
) -> None:
    """Renew a connection's secrets (a new Kite access token) and make it active again.

    Environment: SARAS_BROKER_API_KEY, SARAS_BROKER_API_SECRET, SARAS_BROKER_ACCESS_TOKEN;
    or --secrets-from-stdin. Only the secrets given change.
    """
    from saras.secrets import SecretKeyError, get_secret_box
    from saras.services.connections import SECRET_FIELDS, renew_connection

    secrets = {n: os.environ.get(f"SARAS_BROKER_{n.upper()}", "") for n in SECRET_FIELDS}
    if secrets_from_stdin:
        try:
            loaded = json.loads(sys.stdin.read() or "{}")
        except json.JSONDecodeError:
            loaded = None
        if not isinstance(loaded, dict):
            _fail("stdin is not a JSON object of secrets")
        secrets.update({str(k): str(v) for k, v in loaded.items()})
    try:
        box = get_secret_box()
    except SecretKeyError as exc:
        _fail(str(exc))
    with _session() as s:
        c = renew_connection(s, box, user, alias, secrets)
        typer.echo(f"connection {c.alias} of {user} renewed: {c.status}")


@connections_app.command("check")
def connections_check(
    broker: Annotated[
        list[str] | None, typer.Option(help="Only this broker type (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Call every active connection once; mark and list those whose credentials are refused.

    Exit code 1 when any connection needs a new login (`saras connections update`).
    """
    from saras.db import get_engine
    from saras.services.connections import check_connections

    try:
        checks = check_connections(get_engine(), broker_types=broker)
    except SarasError as exc:
        _fail(str(exc))
    _print_rows([c.as_row() for c in checks], as_json)
    expired = [c for c in checks if c.needs_login]
    for c in expired:
        typer.secho(
            f"expired: {c.user} {c.alias} ({c.broker_type}): renew with "
            f"`saras connections update {c.user} {c.alias}`",
            fg=typer.colors.RED,
            err=True,
        )
    if expired:
        raise typer.Exit(1)


# --- portfolios -------------------------------------------------------------------------------


@portfolios_app.command("add")
def portfolios_add(
    user: Annotated[str, typer.Argument(help="The user's e-mail or id.")],
    name: str,
    currency: Annotated[str, typer.Option()],
    cash: Annotated[str, typer.Option(help="Starting cash balance.")] = "0",
    as_json: JsonOpt = False,
) -> None:
    """Add a portfolio."""
    from saras.services import admin

    with _session() as s:
        p = admin.add_portfolio(s, admin.get_user(s, user), name, currency, cash)
        _print_rows([{"id": str(p.id), "name": p.name, "currency": p.currency}], as_json)


@portfolios_app.command("list")
def portfolios_list(as_json: JsonOpt = False) -> None:
    """List portfolios."""
    from models import Portfolio, User

    with _session() as s:
        rows = [
            {
                "id": str(p.id),
                "user": email,
                "name": p.name,
                "currency": p.currency,
                "cash": str(p.cash_balance),
                "total_value": str(p.total_value),
            }
            for p, email in s.execute(
                select(Portfolio, User.email).join(User).order_by(User.email, Portfolio.name)
            )
        ]
    _print_rows(rows, as_json)


# --- smallcases -------------------------------------------------------------------------------


@smallcases_app.command("add")
def smallcases_add(
    name: str,
    constituents: Annotated[
        Path,
        typer.Option(
            help="CSV with a header: symbol, exchange, weight, rationale (exchange may be left "
            "empty where the symbol is listed on one exchange only)."
        ),
    ],
    description: Annotated[str | None, typer.Option()] = None,
    category: Annotated[str | None, typer.Option()] = None,
    min_investment: Annotated[str | None, typer.Option()] = None,
    risk_level: Annotated[str | None, typer.Option(help="low, medium or high.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a smallcase with its constituents."""
    from saras.services import admin

    rows = admin.parse_constituents_csv(_read_text("--constituents", constituents))
    with _session() as s:
        sc = admin.add_smallcase(
            s,
            name,
            rows,
            description=description,
            category=category,
            min_investment=min_investment,
            risk_level=risk_level,
        )
        _print_rows([{"id": str(sc.id), "name": sc.name, "constituents": len(rows)}], as_json)


@smallcases_app.command("list")
def smallcases_list(as_json: JsonOpt = False) -> None:
    """List smallcases with their constituents."""
    from models import Asset, Smallcase, SmallcaseConstituent

    with _session() as s:
        rows = []
        for sc in s.scalars(select(Smallcase).order_by(Smallcase.name)):
            parts = s.execute(
                select(Asset.symbol, SmallcaseConstituent.weight_percentage)
                .join(Asset)
                .where(SmallcaseConstituent.smallcase_id == sc.id)
                .order_by(SmallcaseConstituent.weight_percentage.desc(), Asset.symbol)
            ).all()
            rows.append(
                {
                    "id": str(sc.id),
                    "name": sc.name,
                    "active": sc.is_active,
                    "constituents": " ".join(f"{sym}:{w.normalize():f}" for sym, w in parts),
                }
            )
    _print_rows(rows, as_json)


# --- keys -------------------------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new encryption key (prepend it to SARAS_SECRET_KEYS, then rotate)."""
    from saras.secrets import generate_key

    typer.echo(generate_key())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored secret under the newest key of SARAS_SECRET_KEYS."""
    from saras.secrets import get_secret_box
    from saras.services.keys import rotate_all

    box = get_secret_box()
    with _session() as s:
        count = rotate_all(s, box)
    typer.echo(f"re-encrypted the secrets of {count} connection(s) under the newest key")


# --- demo -------------------------------------------------------------------------------------


@app.command("demo")
def demo(
    seed_only: Annotated[bool, typer.Option(help="Migrate and seed, run no flow.")] = False,
) -> None:
    """Run the main job on the embedded default database: migrate, seed, run the flows."""
    from flows.demo import run_demo  # above flows/: it runs them

    run_demo(seed_only=seed_only, echo=typer.echo)


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
