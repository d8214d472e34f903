"""Price history ingestion: which assets and days, fetch, validate, write, report.

The flow calls ``plan_ingestion`` once, ``ingest_batch`` once per batch of symbols (a Prefect
task each, so task runs scale with batches, never with symbols or rows), then
``revalue_portfolios``. Every requested symbol ends up in exactly one ``SymbolReport``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from models import Asset, PortfolioHolding, Smallcase, SmallcaseConstituent
from saras.errors import SarasError
from saras.marketdata import calendars
from saras.marketdata.base import (
    BarRequest,
    MarketDataError,
    MarketDataSource,
    SourceAction,
    SourceAuthError,
    SourceConfigError,
    SourceUnavailableError,
)
from saras.marketdata.registry import get_source
from saras.marketdata.validation import validate_bars
from saras.repositories import prices as price_repo
from saras.services import corporate_actions
from saras.services.source_credentials import resolve_source_options
from saras.settings import Settings, get_settings

#: relative difference of a re-fetched close that means the source rewrote its history
ADJUSTMENT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class IngestionItem:
    """One asset to ingest: which source and which days (JSON-able for task parameters)."""

    asset_id: str
    symbol: str
    exchange: str
    source: str
    start: date
    end: date
    last_stored: date | None = None
    first_stored: date | None = None


@dataclass
class SymbolReport:
    """What happened to one symbol; one row of the ingestion table artifact."""

    symbol: str
    exchange: str = ""
    source: str = ""
    start: date | None = None
    end: date | None = None
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    missing_sessions: int = 0
    off_calendar: int = 0
    rewritten: bool = False
    #: corporate actions first recorded by this run (reported by the source, or inferred)
    actions: int = 0
    error: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the symbol could not be ingested."""
        return self.error is not None

    def as_row(self) -> dict[str, Any]:
        """Return the row shown in the table artifact."""
        row = asdict(self)
        row["rejected_reasons"] = ", ".join(f"{k}={v}" for k, v in self.rejected_reasons.items())
        row["start"] = str(self.start or "")
        row["end"] = str(self.end or "")
        row["error"] = self.error or ""
        return row


def _exchange_today(exchanges: Sequence[str], now: datetime) -> date:
    days = [now.astimezone(calendars.exchange_timezone(e)).date() for e in set(exchanges)]
    return max(days) if days else now.date()


def plan_ingestion(
    session: Session,
    *,
    now: datetime,
    symbols: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    source: str | None = None,
    exchanges: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> tuple[list[IngestionItem], list[SymbolReport]]:
    """Decide which assets and days to ingest; return items and reports for skipped symbols."""
    settings = settings or get_settings()
    reports: list[SymbolReport] = []
    query = select(Asset)
    if symbols:
        wanted = {s.strip().upper() for s in symbols}
        assets = list(session.scalars(query.where(Asset.symbol.in_(wanted))))
        for missing in sorted(wanted - {a.symbol for a in assets}):
            reports.append(SymbolReport(missing, error="unknown symbol: not in the asset master"))
    else:
        held = select(PortfolioHolding.asset_id).where(PortfolioHolding.quantity > 0)
        constituent = (
            select(SmallcaseConstituent.asset_id)
            .join(Smallcase, Smallcase.id == SmallcaseConstituent.smallcase_id)
            .where(Smallcase.is_active.is_(True))
        )
        assets = list(
            session.scalars(query.where(or_(Asset.id.in_(held), Asset.id.in_(constituent))))
        )
    if exchanges:
        allowed = {e.upper() for e in exchanges}
        assets = [a for a in assets if a.exchange in allowed]
    assets.sort(key=lambda a: (a.exchange, a.symbol))
    conn = session.connection()
    last = price_repo.last_stored_dates(conn, [a.id for a in assets])
    first = price_repo.first_stored_dates(conn, [a.id for a in assets])
    items = []
    for asset in assets:
        name = source or settings.source_for_exchange(asset.exchange)
        try:
            last_session = end or calendars.last_completed_session(asset.exchange, now)
        except (MarketDataError, ValueError) as exc:
            reports.append(SymbolReport(asset.symbol, asset.exchange, name, error=str(exc)))
            continue
        stored = last.get(asset.id)
        if start is not None:
            begin = start
        elif stored is not None:
            begin = stored + timedelta(days=1)
        else:
            begin = last_session - timedelta(days=settings.price_history_days)
        if begin > last_session:
            reports.append(
                SymbolReport(asset.symbol, asset.exchange, name, begin, last_session)
            )  # up to date: nothing to fetch, nothing failed
            continue
        items.append(
            IngestionItem(
                str(asset.id),
                asset.symbol,
                asset.exchange,
                name,
                begin,
                last_session,
                stored,
                first.get(asset.id),
            )
        )
    return items, reports


def ingest_batch(
    engine: Engine,
    items: Sequence[IngestionItem],
    *,
    now: datetime,
    source_options: Mapping[str, Any] | None = None,
) -> list[SymbolReport]:
    """Fetch, validate and write one batch (one source); the batch commits whole or not at all.

    Raises ``SourceUnavailableError`` when the whole source is down (the task retries it);
    a symbol the source could not deliver, and bad credentials, become failed reports.
    """
    if not items:
        return []
    names = {i.source for i in items}
    if len(names) != 1:
        raise ValueError(f"a batch must use one source, got {sorted(names)}")
    by_symbol = {i.symbol: i for i in items}
    reports = {
        i.symbol: SymbolReport(i.symbol, i.exchange, i.source, i.start, i.end) for i in items
    }
    name = names.pop()
    try:
        # credentials come from a stored connection or settings, never from the parameters
        source = get_source(name, resolve_source_options(engine, name, source_options))
    except (SourceConfigError, SarasError) as exc:
        return _fail_all(reports, str(exc))

    try:
        fetched = _fetch(engine, source, items, reports)
    except SourceAuthError as exc:
        return _fail_all(reports, str(exc))
    valid = _validate(fetched.bars, items, reports, now)
    asset_of = {s: i.asset_id for s, i in by_symbol.items()}
    frame = valid.assign(asset_id=valid["symbol"].map(asset_of))
    with engine.begin() as conn:
        counts = price_repo.write_bars(conn, frame)
        recorded = corporate_actions.record_source_actions(
            conn, by_symbol, fetched.reported, fetched.source
        )
        guessed = corporate_actions.record_source_actions(
            conn, by_symbol, fetched.inferred, corporate_actions.INFERRED_PREFIX + fetched.source
        )
    for symbol in set(recorded) | set(guessed):
        reports[symbol].actions = recorded.get(symbol, 0) + guessed.get(symbol, 0)
    symbol_of = {uuid.UUID(i.asset_id): i.symbol for i in items}
    for asset_id, c in counts.items():
        r = reports[symbol_of[asset_id]]
        r.inserted, r.updated, r.unchanged = c.inserted, c.updated, c.unchanged
    return list(reports.values())


@dataclass(frozen=True)
class _Fetched:
    """One batch's bars after rewrite detection, and the corporate actions seen on the way."""

    bars: pd.DataFrame
    source: str
    reported: list[SourceAction]
    inferred: list[SourceAction]


def _fetch(
    engine: Engine,
    source: MarketDataSource,
    items: Sequence[IngestionItem],
    reports: Mapping[str, SymbolReport],
) -> _Fetched:
    """Fetch a batch, re-fetching whole histories the source rewrote (splits, adjustments)."""
    by_symbol = {i.symbol: i for i in items}
    # Re-fetch the last stored day too: if its close moved, the source rewrote its history.
    requests = [
        BarRequest(i.symbol, i.exchange, min(i.start, i.last_stored or i.start), i.end)
        for i in items
    ]
    result = source.fetch_daily_bars(requests)
    for symbol, reason in result.failures.items():
        if symbol in reports:
            reports[symbol].error = reason
    bars = result.bars
    reported = list(result.actions)
    rewrite, factors = _adjusted_symbols(engine, bars, by_symbol)
    if rewrite:
        full = source.fetch_daily_bars(
            [
                BarRequest(
                    s,
                    by_symbol[s].exchange,
                    by_symbol[s].first_stored or by_symbol[s].start,
                    by_symbol[s].end,
                )
                for s in rewrite
            ]
        )
        bars = pd.concat([bars[~bars["symbol"].isin(rewrite)], full.bars], ignore_index=True)
        reported.extend(full.actions)
        for symbol in rewrite:
            reports[symbol].rewritten = True
    inferred = corporate_actions.infer_from_rewrite(by_symbol, factors, reported)
    # Without a rewrite, a day fetched only to detect adjustments is already stored: drop it
    # (keeps the nightly increment on the all-new fast path).
    detection_day = {
        s: i.last_stored
        for s, i in by_symbol.items()
        if s not in rewrite and i.last_stored is not None and i.last_stored < i.start
    }
    overlap = bars["symbol"].map(detection_day)
    bars = bars[~(bars["price_date"] == overlap)] if len(bars) else bars
    return _Fetched(bars, result.source or items[0].source, reported, inferred)


def _validate(
    bars: pd.DataFrame,
    items: Sequence[IngestionItem],
    reports: Mapping[str, SymbolReport],
    now: datetime,
) -> pd.DataFrame:
    """Validate a batch's bars, count rejects, off-calendar days and gaps; return the valid."""
    exchange_of = {i.symbol: i.exchange for i in items}
    checked = validate_bars(
        bars, exchange_of, today=_exchange_today(list(exchange_of.values()), now)
    )
    for symbol, group in checked.rejected.groupby("symbol"):
        reports[symbol].rejected = len(group)
        reports[symbol].rejected_reasons = {
            str(k): int(v) for k, v in group["reason"].value_counts().items()
        }
    for symbol, n in checked.off_calendar.groupby("symbol").size().items():
        reports[symbol].off_calendar = int(n)
    gap_requests = [BarRequest(i.symbol, i.exchange, i.start, i.end) for i in items]
    for symbol, days in checked.missing_sessions(gap_requests).items():
        if symbol in reports and reports[symbol].error is None:
            reports[symbol].missing_sessions = len(days)
    return checked.valid


def _adjusted_symbols(
    engine: Engine, bars: pd.DataFrame, by_symbol: Mapping[str, IngestionItem]
) -> tuple[list[str], dict[str, float]]:
    """Return the symbols whose source rewrote the stored history, and by what factor.

    The factor is stored close / re-fetched close of the last stored day (4.0 after a 4:1
    split, about 1.01 after a 1% dividend adjustment).
    """
    keys = [(uuid.UUID(i.asset_id), i.last_stored) for i in by_symbol.values() if i.last_stored]
    if not keys or bars.empty:
        return [], {}
    with engine.connect() as conn:
        stored = price_repo.stored_closes(conn, keys)
    fetched = {
        (row.symbol, row.price_date): row.close
        for row in bars.itertuples(index=False)
        if by_symbol[row.symbol].last_stored == row.price_date
    }
    out = []
    factors: dict[str, float] = {}
    for symbol, item in by_symbol.items():
        old = stored.get((uuid.UUID(item.asset_id), item.last_stored))  # type: ignore[arg-type]
        new = fetched.get((symbol, item.last_stored))
        if old is None or new is None or not old:
            continue
        if abs(round(float(new), price_repo.PRICE_DECIMALS) - old) / old > ADJUSTMENT_TOLERANCE:
            out.append(symbol)
            if new:
                factors[symbol] = float(old) / float(new)
    return sorted(out), factors


def _fail_all(reports: dict[str, SymbolReport], message: str) -> list[SymbolReport]:
    for r in reports.values():
        r.error = message
    return list(reports.values())


def fail_batch(items: Sequence[IngestionItem], message: str) -> list[SymbolReport]:
    """Report every symbol of a batch that could not run at all."""
    return [
        SymbolReport(i.symbol, i.exchange, i.source, i.start, i.end, error=message) for i in items
    ]


def batches(items: Sequence[IngestionItem], size: int) -> list[list[IngestionItem]]:
    """Group items by source, then cut each group into batches of at most ``size``."""
    by_source: dict[str, list[IngestionItem]] = defaultdict(list)
    for item in items:
        by_source[item.source].append(item)
    out = []
    for group in by_source.values():
        out.extend([group[i : i + size] for i in range(0, len(group), size)])
    return out


def revalue_portfolios(engine: Engine) -> int:
    """Revalue holdings and portfolio totals at the latest closes."""
    with engine.begin() as conn:
        return price_repo.revalue_holdings(conn)


def summarize(reports: Sequence[SymbolReport]) -> dict[str, int]:
    """Add up a run's reports."""
    return {
        "symbols": len(reports),
        "failed": sum(r.failed for r in reports),
        "inserted": sum(r.inserted for r in reports),
        "updated": sum(r.updated for r in reports),
        "unchanged": sum(r.unchanged for r in reports),
        "rejected": sum(r.rejected for r in reports),
        "missing_sessions": sum(r.missing_sessions for r in reports),
        "off_calendar": sum(r.off_calendar for r in reports),
        "rewritten": sum(r.rewritten for r in reports),
    }


__all__ = [
    "IngestionItem",
    "SourceUnavailableError",
    "SymbolReport",
    "batches",
    "fail_batch",
    "ingest_batch",
    "plan_ingestion",
    "revalue_portfolios",
    "summarize",
]
