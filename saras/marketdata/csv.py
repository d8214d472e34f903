"""The CSV directory source (name ``csv``): vendor dumps and offline use.

Options:

* ``path`` (required): the directory holding one file per symbol.
* ``pattern`` (default ``"{symbol}.csv"``): the file name; ``{symbol}`` is our symbol as stored,
  ``{lower}`` its lower-case form (e.g. ``"{lower}-2014.txt"``).
* ``adjust`` (bool, default False): scale open/high/low/close by ``adj_close / close`` (Yahoo's
  split-and-dividend factor); volume is left as the file has it. A file without an adjusted
  close column is then a failure for that symbol.
* ``adjusted`` (bool, default False): declare that the files already hold adjusted prices.
  ``FetchResult.adjusted`` is ``adjust or adjusted``.
* ``date_format`` (default: ISO only): the files' date format in ``strftime`` codes, e.g.
  ``"%d-%m-%Y"`` or ``"%m/%d/%Y"``, for dumps that do not write ISO dates.

File format: a header row, case-insensitive, holding a date column (``Date``, ``date``,
``timestamp`` or ``datetime``; an unnamed first column, as pandas writes an index, also
works), ``open``, ``high``, ``low``, ``close``, ``volume`` and optionally ``Adj Close`` /
``adj_close``; other columns (``oi``, ``OpenInterest``) are ignored. Dates are ISO dates or
timestamps; a timestamp with an offset keeps its local date (Kite's
``2020-10-01 00:00:00+05:30`` is 2020-10-01). The source never guesses a format: a file whose
dates are not ISO (``02-01-2024``: 2 January or 1 February?) is a failure for that symbol,
naming the value, unless ``date_format`` declares the format. Unparseable or non-numeric cells
(``null``, ``-``) become missing values, delivered as such so validation rejects and counts
them.

A missing file, an unreadable file or a file without the required columns is a failure for that
symbol, never an exception for the batch; a file with no rows in the requested range (while the
calendar expects sessions there) is a failure too. A missing directory is a ``SourceConfigError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saras.marketdata._util import Options, bars_frame, clip_to_range, triage
from saras.marketdata.base import BarRequest, FetchResult, concat_bars, to_date_array

_DATE_HEADERS = ("date", "timestamp", "datetime", "time")
_REQUIRED = ("open", "high", "low", "close", "volume")
_ADJ_HEADERS = ("adjclose", "adjustedclose")
_ISO = r"^\d{4}-\d{2}-\d{2}(?:$|[T ])"
_SAFE_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._&^=-]*$")


def _key(header: str) -> str:
    return re.sub(r"[\s_\-.]", "", str(header)).lower()


class CsvSource:
    """Daily bars read from ``<path>/<SYMBOL>.csv`` files."""

    name = "csv"

    def __init__(self, options: Mapping[str, Any] | None = None):
        opts = Options(self.name, options, ("path", "pattern", "adjust", "adjusted", "date_format"))
        path = opts.raw("path")
        if path is None:
            raise opts.error("path", "is required (the directory holding <SYMBOL>.csv files)")
        if not isinstance(path, str | Path) or not str(path).strip():
            raise opts.error("path", f"must be a directory path, got {path!r}")
        self._dir = Path(path)
        self._pattern: str = opts.str_("pattern", "{symbol}.csv") or "{symbol}.csv"
        if "{symbol}" not in self._pattern and "{lower}" not in self._pattern:
            raise opts.error("pattern", "must contain {symbol} or {lower}")
        self._adjust = opts.bool_("adjust", False)
        self._declared_adjusted = opts.bool_("adjusted", False)
        self._date_format = opts.str_("date_format")
        if self._date_format is not None and "%" not in self._date_format:
            raise opts.error(
                "date_format",
                f"must use strftime codes such as %d-%m-%Y, got {self._date_format!r}",
            )
        self._opts = opts

    def __repr__(self) -> str:
        return f"CsvSource(path={str(self._dir)!r}, pattern={self._pattern!r})"

    def file_for(self, symbol: str) -> Path:
        """Return the file path that holds ``symbol``'s bars."""
        return self._dir / self._pattern.format(symbol=symbol, lower=symbol.lower())

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Read each requested symbol's file and keep the rows in its range."""
        if not self._dir.is_dir():
            raise self._opts.error("path", f"directory {str(self._dir)!r} does not exist")
        failures: dict[str, str] = {}
        frames = []
        for req in triage(requests, failures):
            if not _SAFE_SYMBOL.match(req.symbol):
                failures[req.symbol] = "symbol is not usable as a file name"
                continue
            path = self.file_for(req.symbol)
            if not path.is_file():
                failures[req.symbol] = f"no file {path.name} in {self._dir}"
                continue
            try:
                frame = self._read(req.symbol, path)
            except _FileProblem as exc:
                failures[req.symbol] = f"{path.name}: {exc}"
                continue
            frame = clip_to_range(frame, req.start, req.end)
            if len(frame) == 0:
                failures[req.symbol] = f"{path.name} has no rows from {req.start} to {req.end}"
                continue
            frames.append(frame)
        adjusted = self._adjust or self._declared_adjusted
        return FetchResult(concat_bars(frames), adjusted, failures, self.name)

    def _read(self, symbol: str, path: Path) -> pd.DataFrame:
        try:
            raw = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                on_bad_lines="error",
            )
        except (
            OSError,
            UnicodeDecodeError,
            pd.errors.ParserError,
            pd.errors.EmptyDataError,
        ) as exc:
            raise _FileProblem(f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
        columns = {_key(c): c for c in raw.columns}
        date_col = next((columns[h] for h in _DATE_HEADERS if h in columns), None)
        if (
            date_col is None
            and len(raw.columns)
            and (str(raw.columns[0]).strip() == "" or str(raw.columns[0]).startswith("Unnamed"))
        ):
            date_col = raw.columns[0]
        missing = [h for h in _REQUIRED if h not in columns]
        if date_col is None:
            missing.insert(0, "date")
        if missing:
            raise _FileProblem(
                f"missing column(s) {missing}; header is {[str(c) for c in raw.columns]}"
            )
        adj_col = next((columns[h] for h in _ADJ_HEADERS if h in columns), None)

        def num(col: str) -> np.ndarray:
            return pd.to_numeric(raw[col].str.strip(), errors="coerce").to_numpy(np.float64)

        values = {h: num(columns[h]) for h in _REQUIRED}
        if self._adjust:
            if adj_col is None:
                raise _FileProblem("option adjust=True but the file has no adjusted close column")
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = num(adj_col) / values["close"]
            for h in ("open", "high", "low", "close"):
                values[h] = values[h] * factor
        dates = self._dates(raw[date_col].str.strip())
        return bars_frame(
            symbol,
            dates,
            values["open"],
            values["high"],
            values["low"],
            values["close"],
            values["volume"],
        )

    def _dates(self, text: pd.Series) -> np.ndarray:
        if self._date_format is not None:
            parsed = pd.to_datetime(text, format=self._date_format, errors="coerce")
            return to_date_array(parsed)
        undeclared = text[text.str.contains(r"\d", regex=True) & ~text.str.match(_ISO)]
        if len(undeclared):
            raise _FileProblem(
                f"date {undeclared.iloc[0]!r} is not ISO (YYYY-MM-DD): declare the file's "
                "format, e.g. source_options={'date_format': '%d-%m-%Y'}"
            )
        return to_date_array(text)


class _FileProblem(Exception):
    """A per-file problem that becomes a failure for that symbol."""
