"""The analyst's cockpit in a real browser: typed run form, trigger artifact, approval form.

Drives headless Chromium (Debian's ``chromium`` and ``chromium-driver``, through selenium)
against a real Prefect server started for this module, and saves the screenshots the README's
Analyst's guide shows under ``docs/``. Skips, saying why, where the browser, the driver or
selenium is missing.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt: chromium)"),
    pytest.mark.skipif(
        DRIVER is None, reason="no chromedriver on this machine (apt: chromium-driver)"
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server with its UI, on a free port and a throwaway database."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_API_URL": f"{url}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"{url}/api",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "server.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 300  # a busy machine starts it slowly
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log = (home / "server.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"the Prefect server did not start:\n{log}")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(2)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def api(prefect_server: str) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: f"{prefect_server}/api"}):
        yield prefect_server


def _wait_text(driver: Any, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in driver.find_element("tag name", "body").text:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never appeared on {driver.current_url}")
        time.sleep(0.5)


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The demo platform in a fresh SQLite database: US Tech Leaders with Asha invested."""
    from sqlalchemy.orm import Session

    from flows.investments import invest_in_smallcase
    from saras import db as saras_db
    from saras import migrations
    from saras.secrets import get_secret_box
    from saras.services import prices
    from saras.services.demo import seed_demo
    from saras.settings import get_settings

    monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SARAS_SECRET_KEYS", raising=False)
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    try:
        engine = saras_db.get_engine()
        migrations.upgrade("head", engine)
        get_secret_box(generate=True)
        with Session(engine) as session, session.begin():
            seed_demo(session)
        now = datetime.now(UTC)
        with Session(engine) as session:
            items, _ = prices.plan_ingestion(session, now=now, source="simulated")
        prices.ingest_batch(engine, items, now=now)
        state = invest_in_smallcase(
            "asha@example.com", "US Tech Leaders", "10000", execution=FAST, return_state=True
        )
        assert state.is_completed(), state.message
        yield engine
    finally:
        saras_db._engine_for.cache_clear()
        get_settings.cache_clear()


FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30", "rationale": "core"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30", "rationale": "core"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25", "rationale": "growth"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15", "rationale": "value"},
]


def _artifact_id(flow_run_id: Any, key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[key]),
            )
        )
    return artifact.id


def test_typed_run_form(api: str, browser: Any) -> None:
    from prefect.deployments.runner import RunnerDeployment

    from flows.rebalance import rebalance_smallcase

    deployment = rebalance_smallcase.to_deployment(name="rebalance")
    assert isinstance(deployment, RunnerDeployment)
    deployment_id = deployment.apply()
    browser.get(f"{api}/deployments/deployment/{deployment_id}/run")
    _wait_text(browser, "Name or id of the smallcase")
    body = browser.find_element("tag name", "body").text
    assert "Overrides of the smallcase's stored policy" in body
    assert "Investments (ids, as in the plan report) left out of this run" in body
    # open the typed policy form: every field with its description
    for label in ("Rebalance policy", "list"):
        next(b for b in browser.find_elements("tag name", "button") if b.text == label).click()
    _wait_text(browser, "Relative drift band in percent of each target weight")
    DOCS.mkdir(exist_ok=True)
    browser.set_window_size(1400, 3200)
    browser.save_screenshot(str(DOCS / "analyst-run-form.png"))
    browser.set_window_size(1400, 1800)


def test_plan_report_approval_and_execution_report(api: str, browser: Any, demo: Any) -> None:
    """The real rebalance flow: plan report, approval form with the approver, execution report."""
    from prefect.client.orchestration import get_client
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from flows.rebalance import rebalance_smallcase
    from models import AuditLog, ExecutionRunReport, User

    states: dict[str, Any] = {}

    def run() -> None:
        states["final"] = rebalance_smallcase(
            "US Tech Leaders",
            constituents=NEW_US,
            approval_timeout_seconds=300,
            approval_poll_seconds=1,
            execution=FAST,
            return_state=True,
        )

    context = contextvars.copy_context()  # the thread talks to this module's server
    runner = threading.Thread(target=context.run, args=(run,), daemon=True)
    runner.start()
    run_id = None
    deadline = time.monotonic() + 120
    while run_id is None and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = [r for r in client.read_flow_runs() if r.state and r.state.is_paused()]
        run_id = runs[0].id if runs else None
        time.sleep(0.5)
    assert run_id is not None, "the rebalance never paused"
    # the plan per investment, before approving (wide: every column shows)
    browser.set_window_size(2600, 1000)
    browser.get(f"{api}/artifacts/artifact/{_artifact_id(run_id, 'rebalance-plan-investments')}")
    _wait_text(browser, "asha@example.com")
    browser.save_screenshot(str(DOCS / "analyst-plan-report.png"))
    browser.get(f"{api}/artifacts/artifact/{_artifact_id(run_id, 'rebalance-plan-legs')}")
    _wait_text(browser, "AMZN")
    browser.save_screenshot(str(DOCS / "analyst-plan-legs.png"))
    # the approval form: plan hash pre-filled, the approver's e-mail, a note
    browser.set_window_size(1400, 1800)
    browser.get(f"{api}/runs/flow-run/{run_id}")
    _wait_text(browser, "Resume")
    button = next(b for b in browser.find_elements("tag name", "button") if b.text == "Resume")
    button.click()
    _wait_text(browser, "Your e-mail as a Saras user")
    dialog = browser.find_element("css selector", "[role='dialog']")
    switch = dialog.find_element("css selector", "input[type='checkbox']")
    browser.execute_script("arguments[0].click()", switch)
    plan_hash, approver, note = dialog.find_elements("tag name", "textarea")
    assert len(plan_hash.get_attribute("value") or "") == 64  # pre-filled with the plan's hash
    approver.send_keys("asha@example.com")
    note.send_keys("reviewed per investment")
    browser.save_screenshot(str(DOCS / "analyst-approval-form.png"))
    next(b for b in dialog.find_elements("tag name", "button") if b.text == "Submit").click()
    runner.join(timeout=180)
    final = states["final"]
    assert final.is_completed(), final.message
    browser.set_window_size(2000, 1000)
    browser.get(f"{api}/artifacts/artifact/{_artifact_id(run_id, 'rebalance-execution')}")
    _wait_text(browser, "AMZN")
    browser.save_screenshot(str(DOCS / "analyst-execution-report.png"))
    browser.set_window_size(1400, 1800)
    with Session(demo) as session:
        approved = session.execute(
            select(User.email)
            .join(AuditLog, AuditLog.user_id == User.id)
            .where(AuditLog.event_type == "plan.approved")
        ).scalar_one()
        assert approved == "asha@example.com"
        assert session.scalars(select(ExecutionRunReport)).one().run_status == "completed"


def test_trigger_artifact(api: str, browser: Any, demo: Any) -> None:
    from sqlalchemy.orm import Session

    from flows.evaluate_rebalances import evaluate_rebalances
    from saras.services import policy

    with Session(demo) as session, session.begin():
        policy.set_policy(
            session,
            "US Tech Leaders",
            {"calendar_trigger": "monthly", "relative_drift_band_pct": "25"},
        )
    evaluate_rebalances(start_runs=False)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["rebalance-triggers"]))
        )
    browser.get(f"{api}/artifacts/artifact/{artifact.id}")
    _wait_text(browser, "US Tech Leaders")
    browser.save_screenshot(str(DOCS / "analyst-triggers.png"))
