"""Every class of bad input, through the public interface, on PostgreSQL and the embedded SQLite.

Each case asserts the exit code (2: bad input), exactly one line on stderr naming the culprit,
no traceback, and every table unchanged (row counts and checksums).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from models import Base
from saras import db as saras_db
from saras import migrations
from saras.cli import app
from saras.services import admin
from saras.settings import get_settings

runner = CliRunner()
EMAIL = "owner@example.com"


@dataclass
class Target:
    """A database the CLI is pointed at, seeded with one small platform."""

    engine: Engine
    dir: Path


def _seed(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        user = admin.add_user(session, EMAIL)
        admin.add_asset(session, "AAPL", "NASDAQ", "USD")
        admin.add_asset(session, "MSFT", "NASDAQ", "USD")
        admin.add_asset(session, "INFY", "NSE", "INR")
        admin.add_asset(session, "INFY", "BSE", "INR")
        admin.add_portfolio(session, user, "main", "USD", Decimal(1000))
        admin.add_portfolio(session, user, "ÉTÉ", "USD")
        admin.add_smallcase(
            session,
            "Existing",
            [admin.ConstituentInput("AAPL", Decimal(100))],
        )


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The CLI's database: a fresh PostgreSQL database or an embedded default data dir."""
    mp = pytest.MonkeyPatch()
    data_dir = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    mp.setenv("SARAS_DATA_DIR", str(data_dir / "data"))
    mp.delenv("SARAS_SECRET_KEYS", raising=False)
    url = None
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        url = server.create_database("saras_bad_input")
        mp.setenv("SARAS_DATABASE_URL", url)
    else:
        mp.delenv("SARAS_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    engine = saras_db.get_engine()
    migrations.upgrade("head", engine)
    _seed(engine)
    try:
        yield Target(engine, data_dir)
    finally:
        engine.dispose()
        saras_db._engine_for.cache_clear()
        get_settings.cache_clear()
        mp.undo()
        if url is not None:
            request.getfixturevalue("pg_server").drop_database(url)


def fingerprint(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every row of every table."""
    out = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            digest = hashlib.sha256(
                "\n".join(sorted(repr(tuple(r)) for r in rows)).encode()
            ).hexdigest()
            count = conn.execute(select(func.count()).select_from(table)).scalar_one()
            out[table.name] = (int(count), digest)
    return out


def _csv(target: Target, name: str, text: str | bytes) -> str:
    path = target.dir / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


LONG = "x" * 300
#: (case, argv (with {csv:<text>} for a constituents file), text the one line must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("e-mail with two @", ["users", "add", "a@b@c"], "email 'a@b@c'"),
    ("e-mail with a newline", ["users", "add", "x@y.com\nz"], "email 'x@y.com\\nz'"),
    ("e-mail without a domain", ["users", "add", "nobody"], "email 'nobody'"),
    (
        "e-mail with a look-alike letter",  # a Cyrillic o: the owner's address to the eye
        ["users", "add", "\u043ewner@example.com"],
        "email '\u043ewner@example.com': not ASCII",
    ),
    ("e-mail taken", ["users", "add", EMAIL.upper()], "already exists"),
    ("first name too long", ["users", "add", "n@example.com", "--first-name", LONG], "first_name"),
    (
        "currency that is not one",
        ["assets", "add", "TSLA", "--exchange", "NASDAQ", "--currency", "DOLLARS"],
        "currency 'DOLLARS'",
    ),
    (
        "currency not the exchange's",
        ["assets", "add", "TCS", "--exchange", "NSE", "--currency", "USD"],
        "NSE trades in INR",
    ),
    (
        "exchange US",
        ["assets", "add", "TSLA", "--exchange", "US", "--currency", "USD"],
        "exchange 'US'",
    ),
    (
        "unknown exchange",
        ["assets", "add", "VOD", "--exchange", "LSE", "--currency", "USD"],
        "exchange 'LSE'",
    ),
    (
        "symbol too long",
        ["assets", "add", "S" * 51, "--exchange", "NASDAQ", "--currency", "USD"],
        "symbol 'SSSS",
    ),
    (
        "asset name too long",
        ["assets", "add", "TSLA", "--exchange", "NASDAQ", "--currency", "USD", "--name", LONG],
        "name 'xxx",
    ),
    (
        "asset twice",
        ["assets", "add", "AAPL", "--exchange", "NASDAQ", "--currency", "USD"],
        "AAPL on NASDAQ already exists",
    ),
    (
        "cash not a number",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "abc"],
        "cash 'abc'",
    ),
    (
        "cash 1e30",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "1e30"],
        "cash '1e30'",
    ),
    (
        "cash NaN",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "NaN"],
        "cash 'NaN'",
    ),
    (
        "cash negative",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "-5"],
        "cash '-5'",
    ),
    (
        "cash with 5 decimals",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "1.00001"],
        "cash '1.00001'",
    ),
    (
        "cash in full-width digits",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "\uff11\uff10\uff10"],
        "cash '\uff11\uff10\uff10'",
    ),
    (
        "cash in Arabic-Indic digits",
        ["portfolios", "add", EMAIL, "p", "--currency", "USD", "--cash", "\u0661\u0660\u0660"],
        "cash '\u0661\u0660\u0660'",
    ),
    (
        "portfolio name taken",
        ["portfolios", "add", EMAIL, "MAIN", "--currency", "USD"],
        "already has a portfolio named 'main'",
    ),
    (
        "portfolio name taken, beyond ASCII (SQLite's lower() folds ASCII only)",
        ["portfolios", "add", EMAIL, "été", "--currency", "USD"],
        "already has a portfolio named 'ÉTÉ'",
    ),
    ("portfolio currency", ["portfolios", "add", EMAIL, "p", "--currency", "DOLLARS"], "currency"),
    ("portfolio name too long", ["portfolios", "add", EMAIL, LONG, "--currency", "USD"], "name"),
    (
        "portfolio of nobody",
        ["portfolios", "add", "ghost@example.com", "p", "--currency", "USD"],
        "ghost@example.com",
    ),
    ("zerodha without --live", ["connections", "add", EMAIL, "zerodha"], "paper_trading"),
    (
        "alpaca paper at the live endpoint",
        [
            "connections",
            "add",
            EMAIL,
            "alpaca",
            "--metadata",
            '{"base_url": "https://api.alpaca.markets/v2"}',
        ],
        "reaches a live account (base_url 'https://api.alpaca.markets/v2')",
    ),
    ("unknown broker", ["connections", "add", EMAIL, "robinhood"], "broker_type 'robinhood'"),
    (
        "alias with spaces",
        ["connections", "add", EMAIL, "paper", "--alias", "my alias"],
        "alias 'my alias'",
    ),
    (
        "metadata not JSON",
        ["connections", "add", EMAIL, "paper", "--metadata", "{nope"],
        "--metadata",
    ),
    (
        "metadata not an object",
        ["connections", "add", EMAIL, "paper", "--metadata", "[1]"],
        "--metadata",
    ),
    (
        "paper setting the paper book cannot read",
        ["connections", "add", EMAIL, "paper", "--metadata", '{"paper_fee_bps": "abc"}'],
        "fee_bps",
    ),
    (
        "unknown paper setting",
        ["connections", "add", EMAIL, "paper", "--metadata", '{"paper_feebps": "1"}'],
        "paper_feebps",
    ),
    (
        "constituents without a header",
        ["smallcases", "add", "S", "{csv:AAPL,NASDAQ,60,core\nMSFT,NASDAQ,40,x\n}"],
        "header",
    ),
    ("constituents empty", ["smallcases", "add", "S", "{csv:}"], "empty"),
    (
        "constituents header names a column twice",
        ["smallcases", "add", "S", "{csv:symbol,Symbol,weight\nAAPL,MSFT,100\n}"],
        "column 'symbol' appears twice",
    ),
    (
        "weight fifty",
        ["smallcases", "add", "S", "{csv:symbol,exchange,weight\nAAPL,NASDAQ,fifty\n}"],
        "weight 'fifty'",
    ),
    (
        "weight NaN",
        ["smallcases", "add", "S", "{csv:symbol,exchange,weight\nAAPL,NASDAQ,NaN\n}"],
        "weight 'NaN'",
    ),
    (
        "weight above 100",
        ["smallcases", "add", "S", "{csv:symbol,weight\nAAPL,150\n}"],
        "above 100",
    ),
    (
        "weights not 100",
        ["smallcases", "add", "S", "{csv:symbol,weight\nAAPL,60\nMSFT,30\n}"],
        "weights sum to 90",
    ),
    (
        "unknown symbol",
        ["smallcases", "add", "S", "{csv:symbol,weight\nAAPL,60\nNOPE,40\n}"],
        "unknown symbol 'NOPE'",
    ),
    (
        "symbol on two exchanges",
        ["smallcases", "add", "S", "{csv:symbol,weight\nINFY,100\n}"],
        "INFY",
    ),
    (
        "symbol twice",
        [
            "smallcases",
            "add",
            "S",
            "{csv:symbol,exchange,weight\nAAPL,NASDAQ,50\naapl,NASDAQ,50\n}",
        ],
        "appears twice",
    ),
    (
        "currencies mixed",
        ["smallcases", "add", "S", "{csv:symbol,exchange,weight\nAAPL,NASDAQ,50\nINFY,NSE,50\n}"],
        "mix currencies",
    ),
    (
        "unknown column",
        ["smallcases", "add", "S", "{csv:symbol,weight,colour\nAAPL,100,red\n}"],
        "colour",
    ),
    (
        "smallcase name taken",
        ["smallcases", "add", "Existing", "{csv:symbol,weight\nAAPL,100\n}"],
        "already exists",
    ),
    (
        "smallcase name too long",
        ["smallcases", "add", LONG, "{csv:symbol,weight\nAAPL,100\n}"],
        "name",
    ),
    (
        "min investment",
        ["smallcases", "add", "S", "{csv:symbol,weight\nAAPL,100\n}", "--min-investment", "lots"],
        "min_investment 'lots'",
    ),
    (
        "risk level",
        ["smallcases", "add", "S", "{csv:symbol,weight\nAAPL,100\n}", "--risk-level", "yolo"],
        "risk_level 'yolo'",
    ),
    (
        "constituents file is a directory",
        ["smallcases", "add", "S", "--constituents", "/"],
        "--constituents '/'",
    ),
    (
        "policy of no smallcase",
        ["smallcases", "policy", "set", "NoSuch", "cooldown_days=1"],
        "no smallcase 'NoSuch'",
    ),
    (
        "policy minimum trade of 1e30",
        ["smallcases", "policy", "set", "Existing", "min_trade_value.USD=1e30"],
        "minimum trade value for USD 1E+30: out of range",
    ),
    ("migrate to no revision", ["db", "upgrade", "zzzz"], "revision 'zzzz'"),
    ("migrate down to a date", ["db", "downgrade", "2024-02-30"], "revision '2024-02-30'"),
    (
        "constituents file missing",
        ["smallcases", "add", "S", "--constituents", "/nonexistent/c.csv"],
        "--constituents",
    ),
]


def _argv(target: Target, case: str, argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        if arg.startswith("{csv:") and arg.endswith("}"):
            out += ["--constituents", _csv(target, f"{abs(hash(case))}.csv", arg[5:-1])]
        else:
            out.append(arg)
    return out


@pytest.mark.parametrize(("case", "argv", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    target: Target, case: str, argv: list[str], culprit: str
) -> None:
    before = fingerprint(target.engine)
    result = runner.invoke(app, _argv(target, case, argv))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and culprit in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert fingerprint(target.engine) == before


def test_debug_shows_the_traceback(target: Target) -> None:
    result = runner.invoke(app, ["--debug", "users", "add", "a@b@c"])
    assert result.exit_code != 0
    assert result.exception is not None and "email 'a@b@c'" in str(result.exception)


def test_a_spreadsheet_bom_and_a_blank_exchange_are_accepted(target: Target) -> None:
    path = _csv(
        target,
        "bom.csv",
        "\ufeffsymbol,exchange,weight,rationale\r\nAAPL,,60,core\r\nMSFT,NASDAQ,40,\r\n".encode(),
    )
    result = runner.invoke(app, ["smallcases", "add", "From Excel", "--constituents", path])
    assert result.exit_code == 0, result.output
    with Session(target.engine) as session:
        assert admin.get_smallcase(session, "From Excel").name == "From Excel"


def test_a_long_value_is_cut_in_the_one_line(target: Target) -> None:
    path = _csv(target, "long.csv", f"symbol,weight,rationale\nAAPL,100,{'r' * 20_000}\n")
    result = runner.invoke(app, ["smallcases", "add", "S", "--constituents", path])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "rationale 'rrrr" in line and "...'" in line and len(line) < 200, len(line)


def test_a_file_beyond_the_limit_is_refused_unread(target: Target) -> None:
    before = fingerprint(target.engine)
    path = target.dir / "huge.csv"
    with path.open("w") as file:  # 11 MiB of would-be constituents: read, it is no smallcase
        file.write("symbol,weight\n" + "AAPL,0.0001\n" * (11 * 2**20 // 12))
    result = runner.invoke(app, ["smallcases", "add", "S", "--constituents", str(path)])
    path.unlink()
    assert result.exit_code == 2, result.output
    assert "larger than 10 MiB" in result.stderr and result.stderr.count("\n") == 1
    assert fingerprint(target.engine) == before


def test_blank_optional_text_is_stored_as_none(target: Target) -> None:
    with Session(target.engine) as session:
        user = admin.add_user(session, "blank@example.com", first_name="   ", last_name="")
        portfolio = admin.add_portfolio(session, user, "p", "USD", description="  ")
        assert (user.first_name, user.last_name, portfolio.description) == (None, None, None)
        session.rollback()


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({"SARAS_DATABASE_URL": "garbage:hunter2@"}, "SARAS_DATABASE_URL is not a database URL"),
        ({"SARAS_DATABASE_URL": "mysql://u:hunter2@h/d"}, "not on mysql"),
        (
            {"SARAS_PRICE_SOURCES": "yfinance"},
            'settings: error parsing value for field "price_sources"',
        ),
        ({"SARAS_DATA_DIR": "{file}", "SARAS_DATABASE_URL": None}, "SARAS_DATA_DIR '"),
        # no user part: the password reads as a port, which is no number
        ({"SARAS_DATABASE_URL": "postgresql://db:hunter2/saras"}, "is not a database URL"),
        ({"SARAS_LIVE_TRADING": "hunter2"}, "SARAS_LIVE_TRADING: Input should be a valid boolean"),
    ],
    ids=[
        "url-garbage",
        "url-mysql",
        "price-sources-not-json",
        "data-dir-a-file",
        "url-port-no-number",
        "live-trading-no-boolean",
    ],
)
def test_a_bad_setting_is_one_line_exit_1(
    target: Target, env: dict[str, str | None], culprit: str
) -> None:
    before = fingerprint(target.engine)
    a_file = target.dir / "not-a-dir"
    a_file.touch()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value.replace("{file}", str(a_file)))
        get_settings.cache_clear()
        try:
            result = runner.invoke(app, ["users", "add", "new@example.com"])
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()
    assert result.exit_code == 1, (result.output, result.exception)
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and culprit in line, line
    assert "hunter2" not in result.output
    assert fingerprint(target.engine) == before
