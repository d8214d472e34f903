"""Execute one run in a child process and SIGKILL it at a checkpoint (reliability tests).

Usage: ``python crash_runner.py RUN_ID CHECKPOINT OCCURRENCE [BATCH_SIZE]``

The process kills itself with SIGKILL when ``execute_run`` reaches ``CHECKPOINT`` for the
``OCCURRENCE``-th time: no ``finally`` block runs, no transaction is rolled back politely, the
database sees a connection vanish. The broker is whatever the run's connection row points at (a
fake started by the test process, which outlives this one). The environment carries
``SARAS_DATABASE_URL`` and ``SARAS_SECRET_KEYS``. If the checkpoint is never reached, the
outcome is printed as JSON and the exit status is 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from collections import Counter


def main(argv: list[str]) -> int:
    """Run the execution, dying at the requested checkpoint."""
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    run_id, checkpoint, occurrence = uuid.UUID(argv[1]), argv[2], int(argv[3])
    batch_size = int(argv[4]) if len(argv) == 5 else None

    from sqlalchemy.orm import Session

    from models import SmallcaseExecutionRun, UserBrokerConnection
    from saras.db import get_engine
    from saras.services.brokers import open_broker
    from saras.services.execution import ExecutionSettings, execute_run

    engine = get_engine()
    with Session(engine, expire_on_commit=False) as session:
        run = session.get_one(SmallcaseExecutionRun, run_id)
        connection = session.get_one(UserBrokerConnection, run.broker_connection_id)
    broker = open_broker(engine, connection, for_trading=True, sleep=lambda _s: None, timeout=2.0)
    seen: Counter[str] = Counter()

    def hook(name: str) -> None:
        seen[name] += 1
        if name == checkpoint and seen[name] == occurrence:
            print(f"killed at {name} #{occurrence}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    outcome = execute_run(
        engine,
        run_id,
        broker=broker,
        settings=ExecutionSettings(
            poll_interval=0.01,
            deadline_seconds=8,
            retry_backoff=0.01,
            lookup_horizon=3.0,
            batch_size=batch_size,
        ),
        checkpoint=hook,
    )
    print(json.dumps({"outcome": outcome.as_dict(), "checkpoints": dict(seen)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
