"""The per-investment plan report: orders, skipped legs, cash, shortfall, costs, turnover, CSV."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from saras.brokers.registry import broker_capabilities
from saras.domain.enums import OrderSide, RunType
from saras.domain.plan_report import (
    INVESTMENT_COLUMNS,
    LEG_COLUMNS,
    InvestmentReport,
    investment_rows,
    leg_rows,
    plan_csv,
    plan_totals,
    report_from_plan,
)
from saras.domain.rebalance import (
    BrokerRules,
    Instrument,
    InvestmentState,
    PlanningPolicy,
    plan_investment,
)
from saras.domain.triggers import AssetKey

ALPACA = BrokerRules.of(broker_capabilities("alpaca"))  # the Alpaca kit's sizing rules

D = Decimal


def _us_report() -> InvestmentReport:
    plan = plan_investment(
        RunType.REBALANCE,
        {"AAPL": D(60), "MSFT": D(40)},
        InvestmentState("us-1", D("100"), {"AAPL": D(2), "MSFT": D(10), "OLD": D(1)}),
        {
            "AAPL": Instrument("AAPL", D(100), fractionable=True),
            "MSFT": Instrument("MSFT", D(50), fractionable=True),
            "OLD": Instrument("OLD", D(100), fractionable=True),
        },
        ALPACA,
        PlanningPolicy(),
    )
    return report_from_plan(
        plan,
        exchanges={"AAPL": "NASDAQ", "MSFT": "NASDAQ", "OLD": "NYSE"},
        user="asha@example.com",
        connection="alpaca_primary",
        broker_type="alpaca",
        costs=broker_capabilities("alpaca").costs,
        currency="USD",
    )


def _india_report() -> InvestmentReport:
    # whole shares of an expensive stock and little cash: a leg short of cash
    plan = plan_investment(
        RunType.INVEST,
        {"INFY": D(50), "MRF": D(50)},
        InvestmentState("in-1", D("20000")),
        {
            "INFY": Instrument("INFY", D(1500), fractionable=False),
            "MRF": Instrument("MRF", D(130000), fractionable=False),
        },
        BrokerRules.whole_shares(),
        PlanningPolicy(min_trade_value=D(500)),
        amount=D("20000"),
    )
    return report_from_plan(
        plan,
        exchanges={"INFY": "NSE", "MRF": "NSE"},
        user="ravi@example.in",
        connection="kite_primary",
        broker_type="zerodha",
        currency="INR",
        costs=broker_capabilities("zerodha").costs,  # the Kite kit's delivery charges
    )


def test_us_rebalance_rows() -> None:
    report = _us_report()
    # value 100 + 200 + 500 + 100 = 900; investable 891 (1% buffer)
    assert report.investable_value == D("891")
    sides = {(o.symbol, o.side) for o in report.orders}
    assert sides == {("OLD", OrderSide.SELL), ("MSFT", OrderSide.SELL), ("AAPL", OrderSide.BUY)}
    assert report.costs.total == 0  # Alpaca
    assert report.shortfall == 0
    expected_turnover = (report.est_buys + report.est_sells) / 2 / D("891") * 100
    assert report.turnover_pct == expected_turnover.quantize(D("0.01"))
    row = investment_rows([report])[0]
    assert tuple(row) == INVESTMENT_COLUMNS
    assert row["broker"] == "alpaca" and row["currency"] == "USD" and row["est_costs"] == "0.00"
    assert row["cash_before"] == "100.00"
    assert "AAPL 60.00/60.00" in row["weights_after"]
    legs = leg_rows([report])
    assert all(tuple(r) == LEG_COLUMNS for r in legs)
    old = next(r for r in legs if r["symbol"] == "OLD")
    assert old["action"] == "sell" and old["exchange"] == "NYSE" and old["quantity"] == "1"


def test_india_invest_short_of_cash() -> None:
    report = _india_report()
    assert [(o.symbol, o.side) for o in report.orders] == [("INFY", OrderSide.BUY)]
    skip = report.skipped[0]
    assert (skip.symbol, skip.exchange) == ("MRF", "NSE")
    assert skip.reason in {"insufficient_cash", "not_fractionable_too_small"}
    costs = report.costs
    assert costs.stt > 0 and costs.stamp_duty > 0 and costs.dp_charges == 0
    row = investment_rows([report])[0]
    assert row["est_costs"] == f"{costs.total.quantize(D('0.01')):f}"
    legs = leg_rows([report])
    mrf = next(r for r in legs if r["symbol"] == "MRF")
    assert mrf["action"] == "skip" and mrf["detail"] and mrf["weight_after"] == "0.00"
    if skip.reason == "insufficient_cash":
        # MRF's 50% target is entirely missing
        assert report.shortfall == (report.investable_value / 2).quantize(D("0.01"))


def test_csv_and_totals_per_currency() -> None:
    reports = [_us_report(), _india_report()]
    text = plan_csv(reports)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert tuple(parsed[0]) == LEG_COLUMNS
    assert len(parsed) == len(leg_rows(reports))
    assert {r["currency"] for r in parsed} == {"USD", "INR"}
    totals = plan_totals(reports)
    assert set(totals) == {"INR", "USD"}
    assert totals["USD"]["est_costs"] == "0.00"
    assert D(totals["INR"]["est_costs"]) > 0


def test_shortfall_counts_only_cash() -> None:
    report = _us_report()
    assert report.cash_limited is False
    assert AssetKey("AAPL", "NASDAQ") in report.target_weights
