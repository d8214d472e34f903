"""The registry, the protocol and the request type: names, lazy imports, no I/O at construction."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest

import saras.marketdata as md
from saras.marketdata import (
    BarRequest,
    FetchResult,
    MarketDataSource,
    SourceConfigError,
    SourceUnavailableError,
    empty_bars,
    get_source,
    is_retryable,
    source_names,
)

CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: construction must not notice


def test_known_names() -> None:
    assert source_names() == ["alpaca", "csv", "kite", "simulated", "yfinance"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(SourceConfigError, match=r"'bloomberg'.*alpaca, csv, kite, simulated") as e:
        get_source("bloomberg")
    assert e.value.option == "source"


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("simulated", None),
        ("csv", {"path": "/nonexistent/dir"}),
        ("yfinance", {}),
        ("alpaca", {"api_key": "k", "api_secret": "s", "data_url": CLOSED_PORT}),
        ("kite", {"api_key": "k", "access_token": "t", "root": CLOSED_PORT}),
    ],
)
def test_every_source_builds_without_io_and_fits_the_protocol(
    name: str, options: dict | None
) -> None:
    source = get_source(name, options)
    assert isinstance(source, MarketDataSource)
    assert source.name == name


def test_unknown_options_are_named() -> None:
    with pytest.raises(SourceConfigError, match="'pathh'") as err:
        get_source("csv", {"pathh": "/x"})
    assert err.value.option == "pathh"


def test_importing_the_package_imports_no_sdk() -> None:
    code = (
        "import sys, saras.marketdata as m; "
        "bad = [x for x in ('yfinance', 'alpaca', 'kiteconnect', 'exchange_calendars') "
        "if x in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"
    assert md.YFinanceSource.name == "yfinance"  # lazy attribute access works


def test_bar_request_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="after end"):
        BarRequest("AAPL", "NYSE", date(2024, 2, 1), date(2024, 1, 1))
    with pytest.raises(ValueError, match=r"datetime\.date"):
        BarRequest("AAPL", "NYSE", datetime(2024, 1, 1), date(2024, 1, 2))
    with pytest.raises(ValueError, match="symbol"):
        BarRequest("", "NYSE", date(2024, 1, 1), date(2024, 1, 2))
    assert BarRequest("AAPL", "NYSE", date(2024, 1, 1), date(2024, 1, 1)).start == date(2024, 1, 1)


def test_error_classes() -> None:
    assert is_retryable(SourceUnavailableError("down"))
    assert not is_retryable(SourceConfigError("bad"))
    assert isinstance(SourceConfigError("bad"), ValueError)
    result = FetchResult(empty_bars(), adjusted=False)
    assert result.failures == {} and result.symbols == []
