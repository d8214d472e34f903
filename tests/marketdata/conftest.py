"""Fixtures for the market-data tests: local fake servers and yfinance isolation.

``reference_dir`` (the shared reference data, or skip) is tests/conftest.py's.

``fakes.py`` is loaded by path under a unique module name so that it never collides with a
``fakes`` module of another test directory (the test tree has no ``__init__.py`` files).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_HERE = Path(__file__).resolve().parent


def _load_fakes() -> ModuleType:
    name = "saras_tests_marketdata_fakes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "fakes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fakes() -> ModuleType:
    """The fake-server module (classes and canned error answers)."""
    return _load_fakes()


@pytest.fixture(scope="session")
def _yf_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yfinance as yf

    path = tmp_path_factory.mktemp("yfinance-cache")
    yf.set_tz_cache_location(str(path))  # never write into the repo or the user's cache
    return path


@pytest.fixture
def yf_isolated(_yf_cache_dir: Path) -> Iterator[Path]:
    """Give yfinance a temp cache dir and clear its in-process response cache around a test."""
    from yfinance.data import YfData

    YfData.cache_get.cache_clear()
    yield _yf_cache_dir
    YfData.cache_get.cache_clear()


@pytest.fixture
def fake_yahoo(fakes: ModuleType, yf_isolated: Path) -> Iterator[object]:
    """A running fake Yahoo server."""
    with fakes.FakeYahoo() as server:
        yield server


@pytest.fixture
def yahoo_session(fakes: ModuleType, fake_yahoo: object) -> object:
    """A curl_cffi session that sends Yahoo traffic to the fake server."""
    return fakes.LocalYahooSession(fake_yahoo.url)  # type: ignore[attr-defined]


@pytest.fixture
def fake_alpaca(fakes: ModuleType) -> Iterator[object]:
    """A running fake Alpaca market-data server."""
    with fakes.FakeAlpacaData() as server:
        yield server


@pytest.fixture
def fake_kite(fakes: ModuleType) -> Iterator[object]:
    """A running fake Kite server."""
    with fakes.FakeKite() as server:
        yield server


class SleepRecorder:
    """An injectable ``sleep`` that records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    """A recording no-op sleep."""
    return SleepRecorder()
