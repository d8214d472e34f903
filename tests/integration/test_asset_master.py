"""The asset master from Alpaca's asset list and Kite's instruments dump, through their SDKs."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Asset
from saras.brokers.alpaca import AlpacaBroker
from saras.brokers.base import BrokerCredentials, ConnectionConfig
from saras.brokers.zerodha import ZerodhaBroker
from saras.services.asset_master import import_assets
from tests.fakes.fake_alpaca import FakeAlpaca, alpaca_connection
from tests.fakes.fake_kite import FakeKite


def test_alpaca_assets_carry_fractionable(db: Session) -> None:
    with FakeAlpaca(auto_assets=False) as fake:
        fake.add_asset("AAPL", price="190", fractionable=True)
        fake.add_asset("BRK.A", price="600000", fractionable=False)
        config, credentials = alpaca_connection(fake)
        assets = AlpacaBroker(config, credentials, sleep=lambda s: None).list_assets()
    counts = import_assets(db, assets)
    assert counts.created == 2
    rows = {a.symbol: a for a in db.scalars(select(Asset).where(Asset.currency == "USD"))}
    assert rows["AAPL"].metadata_["fractionable"] is True
    assert rows["BRK.A"].metadata_["fractionable"] is False
    assert import_assets(db, assets).unchanged == 2  # a re-import changes nothing


def test_kite_instruments_carry_token_lot_and_tick(db: Session) -> None:
    with FakeKite() as fake:
        fake.set_price("INFY", "1500")
        fake.set_price("TCS", "3900")
        config = ConnectionConfig("kite-1", "zerodha", False, {"root": fake.url})
        credentials = BrokerCredentials(
            api_key=SecretStr(fake.api_key), access_token=SecretStr(fake.access_token)
        )
        assets = ZerodhaBroker(config, credentials, sleep=lambda s: None).list_assets("NSE")
    counts = import_assets(db, assets, symbols=["INFY"])
    assert counts.created == 1
    infy = db.scalars(select(Asset).where(Asset.symbol == "INFY", Asset.exchange == "NSE")).one()
    assert infy.currency == "INR"
    assert isinstance(infy.metadata_["instrument_token"], int)
    assert infy.metadata_["lot_size"] == 1 and infy.metadata_["tick_size"] == "0.05"
