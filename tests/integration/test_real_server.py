"""Saras on a real Prefect server, wired as README "Deployments" says, end to end.

`prefect server start` (its own PREFECT_HOME, its database on PostgreSQL as in production),
deployments/bootstrap.sh, two process workers on the `saras` pool; then the `nightly-prices`
deployment runs (simulated source) and writes its rows, each run of the batch executed once by
one worker, its completion triggers `nightly-positions`, and a failing run fires the failure
alert at a local webhook. Last, an analyst rebalances the demo's US smallcase (paper broker)
through the `rebalance` deployment as the UI does it: the run is created with typed parameters,
pauses, the plan artifact is read, and the run is resumed with the approval form's fields
(read from the paused run's input schema) as `run_input`; the orders and fills are then rows.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from flows.demo import FAST_EXECUTION, US_REBALANCE
from models import (
    Asset,
    AuditLog,
    PriceHistory,
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    UserSmallcaseInvestment,
)
from saras import migrations
from saras.db import make_engine
from saras.secrets import generate_key
from saras.services import admin
from saras.services.demo import US_ASSETS, seed_demo

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("AAPL", "MSFT")
ANALYST = "analyst@example.com"  # a Saras user: the approver the form names
US_SMALLCASE = "US Tech Leaders"  # the demo's
T = TypeVar("T")

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Webhook:
    """A local HTTP endpoint that records what the alert notifications POST."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the worker's flow-run processes too
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@pytest.fixture
def platform(pg_server: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Saras' database (migrated, the demo seeded, an analyst) and an empty one for Prefect."""
    saras_url = pg_server.create_database("saras_real")
    prefect_url = pg_server.create_database("prefect_real")
    engine = make_engine(saras_url)
    migrations.upgrade("head", engine)
    with Session(engine) as s, s.begin():
        seed_demo(s)  # SYMBOLS are among its NASDAQ assets
        admin.add_user(s, ANALYST, "Ana", "Lyst")
    engine.dispose()
    async_url = make_url(prefect_url).set(drivername="postgresql+asyncpg")
    yield {
        "saras": saras_url,
        "prefect": async_url.render_as_string(hide_password=False),
    }
    pg_server.drop_database(saras_url)
    pg_server.drop_database(prefect_url)


def test_bootstrap_worker_nightly_prices_trigger_and_alerts(
    platform: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    webhook = Webhook()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SARAS_", "PREFECT_"))}
    env = {
        **base,
        # what README "Deployments" lists for the server, bootstrap and workers
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": platform["prefect"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "SARAS_DATABASE_URL": platform["saras"],
        "SARAS_SECRET_KEYS": generate_key(),
        "SARAS_DATA_DIR": str(tmp_path / "data"),
        "SARAS_REPO_DIR": str(ROOT),
        "SARAS_ALERT_WEBHOOK_URL": webhook.url,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),  # this checkout's code in the worker's flow runs
        # the test's one speed-up: workers ask for scheduled runs every 2 s (Prefect: 10 s)
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        # the shortest slot lease the server grants, so that the approval pause outlasts it
        "SARAS_REBALANCE_SLOT_LEASE_SECONDS": "60",
    }
    prefect = [sys.executable, "-m", "prefect"]
    server_log = tmp_path / "server.log"
    server = _start(
        [*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, server_log
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the server exited: {_tail(server_log)}")
            try:
                return httpx.get(f"{api}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("the Prefect server", healthy, timeout=240)

        bootstrap = subprocess.run(
            ["bash", str(ROOT / "deployments" / "bootstrap.sh")],
            cwd=tmp_path,  # runs from anywhere
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        assert bootstrap.returncode == 0, (bootstrap.stdout + bootstrap.stderr)[-4000:]

        client = httpx.Client(base_url=api, timeout=30)
        alerts = {"saras-run-failed", "saras-nightly-late", "saras-reconciliation-differences"}
        every = client.post("/automations/filter", json={}).json()
        automations = {a["name"]: a for a in every if a["name"] in alerts}
        assert set(automations) == alerts, [a["name"] for a in every]
        assert all(a["enabled"] for a in automations.values())
        assert automations["saras-nightly-late"]["trigger"]["posture"] == "Proactive"
        block = client.get("/block_types/slug/custom-webhook/block_documents/name/saras-alerts")
        assert block.status_code == 200
        actions = [a["actions"] for a in automations.values()]
        assert {x[0].get("block_document_id") for x in actions} == {block.json()["id"]}, actions

        for i in range(2):  # two process workers share the pool's runs
            workers.append(
                _start(
                    [
                        *prefect,
                        "worker",
                        "start",
                        "--pool",
                        "saras",
                        "--limit",
                        "1",
                        "--name",
                        f"saras-test-{i}",
                    ],
                    env,
                    tmp_path / f"worker-{i}.log",
                )
            )

        def run(deployment: str, parameters: dict[str, Any]) -> str:
            found = client.get(f"/deployments/name/{deployment}")
            assert found.status_code == 200, found.text
            created = client.post(
                f"/deployments/{found.json()['id']}/create_flow_run",
                json={"parameters": parameters},
            )
            assert created.status_code == 201, created.text
            return str(created.json()["id"])

        def finished(flow_run_id: str) -> dict[str, Any] | None:
            for i, worker in enumerate(workers):
                if worker.poll() is not None:
                    raise AssertionError(
                        f"worker {i} exited: {_tail(tmp_path / f'worker-{i}.log')}"
                    )
            state = client.get(f"/flow_runs/{flow_run_id}").json()["state"]
            return state if state and state["type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

        window = {"start": "2024-01-02", "end": "2024-01-31", "source": "simulated"}
        prices = run("ingest-price-history/nightly-prices", {"symbols": list(SYMBOLS), **window})
        again = run("ingest-price-history/nightly-prices", {"symbols": list(SYMBOLS), **window})
        failing = run(
            "ingest-price-history/nightly-prices", {"symbols": ["AAPL"], "source": "no-such-source"}
        )
        for flow_run in (prices, again):
            state = _wait("the nightly-prices runs", functools.partial(finished, flow_run), 300)
            assert state["name"] == "Completed", (state, _tail(tmp_path / "worker-0.log"))
        engine = make_engine(platform["saras"])
        with Session(engine) as s:
            rows = s.scalar(select(func.count()).select_from(PriceHistory))
            last = s.scalar(select(func.max(PriceHistory.price_date)))
            audits = s.scalars(
                select(AuditLog.request_id).where(
                    AuditLog.event_type == "flow.ingest_price_history"
                )
            ).all()
        engine.dispose()
        assert rows == len(SYMBOLS) * 21 and last == date(2024, 1, 31)  # 21 NYSE sessions
        # each run of the batch was executed once, by one of the two workers
        assert sorted(str(a) for a in audits if str(a) in {prices, again}) == sorted(
            [prices, again]
        )
        for flow_run in (prices, again):
            assert client.get(f"/flow_runs/{flow_run}").json()["run_count"] == 1
        # the runs' reports: a row per symbol; the two runs of one window (at once, on two
        # workers) inserted each session once between them, and each saw all 21
        artifacts = client.post(
            "/artifacts/filter", json={"flow_runs": {"id": {"any_": [prices, again]}}}
        ).json()
        reports = [json.loads(a["data"]) for a in artifacts if a["key"] == "price-ingestion"]
        assert len(reports) == 2, [a["key"] for a in artifacts]
        for symbol in SYMBOLS:
            rows_of = [next(r for r in report if r["symbol"] == symbol) for report in reports]
            assert sum(int(r["inserted"]) for r in rows_of) == 21, rows_of
            assert all(int(r["inserted"]) + int(r["unchanged"]) == 21 for r in rows_of), rows_of

        def submissions() -> dict[str, dict[str, int]] | None:
            logs = client.post(
                "/logs/filter",
                json={"logs": {"flow_run_id": {"any_": [prices, again]}}, "limit": 200},
            ).json()
            found = {run: {"tried": 0, "aborted": 0, "started": 0} for run in (prices, again)}
            for log in logs:
                counts = found[str(log["flow_run_id"])]
                message = log["message"]
                counts["tried"] += "submitting flow run" in message
                counts["aborted"] += message.startswith("Aborted submission of flow run")
                counts["started"] += "submitted to infrastructure" in message
            return found if all(c["started"] for c in found.values()) else None

        # ... and started by one worker: a worker that reached for a run another had taken
        # was refused by the server (its Pending proposal aborted), as the logs of each run say
        attempts = _wait("the workers' submission logs", submissions, timeout=60)
        for counts in attempts.values():
            assert counts["started"] == 1, attempts
            assert counts["tried"] - counts["aborted"] == 1, attempts

        failed = _wait("the failing run", lambda: finished(failing), timeout=300)
        assert failed["type"] == "FAILED", failed

        # the price run's completion started the snapshot (the deployment trigger)
        positions = client.get("/deployments/name/snapshot-positions/nightly-positions").json()

        def triggered() -> list[dict[str, Any]] | None:
            runs = client.post(
                "/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [positions["id"]]}}},
            ).json()
            return runs or None

        assert _wait("the triggered snapshot run", triggered, timeout=120)

        # the failure alert reached the operator's webhook
        alert = _wait(
            "the failure alert",
            lambda: [m for m in webhook.received if "nightly-prices" in json.dumps(m)],
            timeout=120,
        )
        assert "Failed" in alert[0]["subject"], alert

        _analyst_rebalance(api, platform["saras"], finished)
    finally:
        for worker in workers:
            _stop(worker)
        _stop(server)
        webhook.close()


def _approval_input(schema: dict[str, Any], plan_hash: str) -> dict[str, Any]:
    """Fill the approval form as an analyst does in the UI: each field by its name.

    The UI renders the paused run's input schema and submits its fields as ``run_input``;
    fields this test does not know keep the default the form shows.
    """
    values: dict[str, Any] = {}
    for name, field in schema.get("properties", {}).items():
        if name == "approve":
            values[name] = True
        elif name == "plan_hash":
            assert field.get("default") == plan_hash, (field, plan_hash)  # pre-filled
            values[name] = field["default"]
        elif "email" in name or name in {"approver", "approved_by"}:
            values[name] = ANALYST
        elif name in {"note", "reason", "comment"}:
            values[name] = "approved in the real-server test"
        elif "default" in field:
            values[name] = field["default"]
        else:
            raise AssertionError(f"the approval form has a field the test cannot fill: {name}")
    missing = set(schema.get("required", [])) - set(values)
    assert not missing, (missing, schema)
    assert values.get("approve") is True, schema  # the form has an approval to give
    return values


def _analyst_rebalance(
    api: str, saras_url: str, finished: Callable[[str], dict[str, Any] | None]
) -> None:
    """Rebalance the demo's US smallcase through the deployment, approved as the UI does."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.settings import PREFECT_API_URL, temporary_settings

    us_symbols = [symbol for symbol, _, _ in US_ASSETS]
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:

        def run(deployment: str, parameters: dict[str, Any]) -> uuid.UUID:
            found = client.read_deployment_by_name(deployment)
            return client.create_flow_run_from_deployment(found.id, parameters=parameters).id

        def completed(flow_run_id: uuid.UUID, what: str) -> None:
            state = _wait(what, functools.partial(finished, str(flow_run_id)), timeout=300)
            assert state["name"] == "Completed", state

        # recent prices for every constituent, then Asha invests through her paper broker
        recent = datetime.now(UTC).date() - timedelta(days=20)
        prices = run(
            "ingest-price-history/nightly-prices",
            {"symbols": us_symbols, "start": recent.isoformat(), "source": "simulated"},
        )
        completed(prices, "recent prices")
        invest = run(
            "invest-in-smallcase/invest",
            {
                "user": "asha@example.com",
                "smallcase": US_SMALLCASE,
                "amount": "10000",
                "execution": FAST_EXECUTION,
            },
        )
        completed(invest, "the investment")

        # the analyst's run, created as the UI's "Run" form does: typed parameters
        rebalance = run(
            "rebalance-smallcase/rebalance",
            {
                "smallcase": US_SMALLCASE,
                "constituents": US_REBALANCE,
                "require_approval": True,
                "approval_timeout_seconds": 900,
                "approval_poll_seconds": 2,
                "execution": FAST_EXECUTION,
            },
        )

        def paused() -> Any:
            state = client.read_flow_run(rebalance).state
            if state is not None and state.type.value in {"COMPLETED", "FAILED", "CRASHED"}:
                raise AssertionError(f"the rebalance ended without pausing: {state}")
            return state if state is not None and state.type.value == "PAUSED" else None

        state = _wait("the rebalance to pause for approval", paused, timeout=300)
        paused_at = time.monotonic()
        keyset = state.state_details.run_input_keyset
        assert keyset, state.state_details  # it waits for input: the UI shows a form

        # what the analyst reviews: the plan artifacts of the paused run
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[rebalance]))
        )
        by_key = {a.key: a for a in artifacts if a.key}
        assert {"rebalance-plan", "rebalance-plan-summary"} <= set(by_key), list(by_key)
        summary = str(by_key["rebalance-plan-summary"].data)
        assert US_SMALLCASE in summary, summary
        plan_hash = summary.split("plan hash: `")[1].split("`")[0]
        rows = json.loads(str(by_key["rebalance-plan"].data))
        assert {r["symbol"] for r in rows} >= {"AMZN"}, rows  # AMZN leaves the smallcase

        # one rebalance per smallcase, through a pause longer than the slot's 60 s lease: the
        # paused run renews it (the server sweeps expired leases every 15 s)
        time.sleep(max(0.0, paused_at + 85 - time.monotonic()))
        second = run("rebalance-smallcase/rebalance", {"smallcase": US_SMALLCASE, "dry_run": True})
        refused = _wait("the second rebalance", functools.partial(finished, str(second)), 300)
        assert refused["name"] == "Failed", refused
        assert "already being rebalanced" in str(refused.get("message")), refused

        schema = json.loads(client.read_flow_run_input(rebalance, keyset["schema"]))
        result = client.resume_flow_run(rebalance, run_input=_approval_input(schema, plan_hash))
        assert result.status == SetStateStatus.ACCEPT, result.details
        completed(rebalance, "the approved rebalance")

    engine = make_engine(saras_url)
    try:
        _check_rebalance_rows(engine, rebalance)
    finally:
        engine.dispose()


def _check_rebalance_rows(engine: Any, flow_run_id: uuid.UUID) -> None:
    """The approved plan's orders were filled by the paper broker and booked."""
    with Session(engine) as s:
        sc = s.scalars(select(Smallcase).where(Smallcase.name == US_SMALLCASE)).one()
        runs = s.scalars(
            select(SmallcaseExecutionRun)
            .join(
                UserSmallcaseInvestment,
                UserSmallcaseInvestment.id == SmallcaseExecutionRun.investment_id,
            )
            .where(
                UserSmallcaseInvestment.smallcase_id == sc.id,
                SmallcaseExecutionRun.run_type == "rebalance",
            )
        ).all()
        assert [r.status for r in runs] == ["completed"], [(r.id, r.status) for r in runs]
        orders = s.scalars(
            select(SmallcaseExecutionOrder).where(
                SmallcaseExecutionOrder.execution_run_id == runs[0].id
            )
        ).all()
        assert orders and {o.status for o in orders} == {"filled"}, [o.status for o in orders]
        assert {o.side for o in orders} == {"buy", "sell"}  # AMZN sold, the others bought
        booked = s.scalar(
            select(func.count())
            .select_from(TradingTransaction)
            .where(TradingTransaction.transaction_type.in_(["buy", "sell"]))
        )
        assert booked and booked >= len(orders)
        symbols = s.scalars(
            select(Asset.symbol)
            .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
            .where(SmallcaseConstituent.smallcase_id == sc.id)
        ).all()
        assert set(symbols) == {c["symbol"] for c in US_REBALANCE}, symbols  # applied
        audits = s.scalars(
            select(AuditLog.event_type).where(AuditLog.request_id == flow_run_id)
        ).all()
        assert "flow.rebalance_smallcase" in [str(a) for a in audits], audits
