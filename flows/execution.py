"""Execute (or resume) one execution run through its broker, exactly once."""

from __future__ import annotations

import time

from prefect import flow
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.review import finish
from flows.kit.runners import SarasTaskRunner
from saras.domain.inputs import check_run_id
from saras.domain.parameters import ExecutionParameters, settings_kwargs
from saras.errors import SarasError
from tasks.execution import execute_one_run

PATH = "flows/execution.py:execute_run"


@flow(name="execute-run", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def execute_run(run_id: str, execution: ExecutionParameters | None = None) -> State:
    """Execute an approved run, or finish one a crash interrupted; never places an order twice.

    Args:
        run_id: The execution run to execute (an approved run, or one a crash left executing).
        execution: How patient the execution is (polling, deadline, timeouts); empty: the
            defaults.
    """
    began = time.monotonic()
    try:
        result = execute_one_run(str(check_run_id(run_id)), settings_kwargs(execution))
    except SarasError as exc:
        return finish("flow.execute_run", began, None, [], message=str(exc), failed=True, path=PATH)
    return finish("flow.execute_run", began, None, [result], path=PATH)
