"""Saras on a real Prefect server, wired as README "Deployments" says, end to end.

`prefect server start` (its own PREFECT_HOME, its database on PostgreSQL as in production),
deployments/bootstrap.sh, a process worker on the `saras` pool; then the `nightly-prices`
deployment runs (simulated source) and writes its rows, its completion triggers
`nightly-positions`, and a failing run fires the failure alert at a local webhook.
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
from collections.abc import Callable, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from models import AuditLog, PriceHistory
from saras import migrations
from saras.db import make_engine
from saras.secrets import generate_key
from saras.services import admin

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("AAPL", "MSFT")
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
    """Saras' database (migrated, two assets) and an empty one for the Prefect server."""
    saras_url = pg_server.create_database("saras_real")
    prefect_url = pg_server.create_database("prefect_real")
    engine = make_engine(saras_url)
    migrations.upgrade("head", engine)
    with Session(engine) as s, s.begin():
        for symbol in SYMBOLS:
            admin.add_asset(s, symbol, "NASDAQ", "USD", metadata={"fractionable": True})
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
    finally:
        for worker in workers:
            _stop(worker)
        _stop(server)
        webhook.close()
