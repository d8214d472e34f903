"""The task runner of every Saras flow, picked from settings when a flow run starts.

``@flow(task_runner=SarasTaskRunner())`` costs nothing at import (``prefect deploy`` imports every
flow file): the choice is read from the environment of the process that runs the flow, so one
deployment runs on threads on a laptop and on a Dask cluster in production with no code change.

- ``SARAS_TASK_RUNNER``: ``threads`` (default, Prefect's ``ThreadPoolTaskRunner``) or ``dask``
  (needs the ``[dask]`` extra: ``pip install -e ".[dask]"``).
- ``SARAS_DASK_ADDRESS``: the scheduler of an existing Dask cluster (``tcp://host:8786``);
  unset, each flow run starts a ``LocalCluster`` of ``SARAS_DASK_WORKERS`` processes (default 2)
  with ``SARAS_DASK_THREADS_PER_WORKER`` threads each (default 1) and stops it at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from prefect.futures import PrefectFuture, PrefectFutureList
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TaskRunnerSettings(BaseSettings):
    """Which task runner the flows use; read when a flow run starts, never at import."""

    model_config = SettingsConfigDict(env_prefix="SARAS_", extra="ignore")

    task_runner: Literal["threads", "dask"] = "threads"
    task_runner_max_workers: int | None = Field(default=None, ge=1)
    dask_address: str | None = None
    dask_workers: int = Field(default=2, ge=1)
    dask_threads_per_worker: int = Field(default=1, ge=1)


def build_task_runner(settings: TaskRunnerSettings | None = None) -> TaskRunner[Any]:
    """Return a fresh, unstarted task runner as the settings ask."""
    settings = settings or TaskRunnerSettings()
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.task_runner_max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "SARAS_TASK_RUNNER=dask needs the dask extra: pip install -e '.[dask]'"
        ) from exc
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": settings.dask_workers,
            "threads_per_worker": settings.dask_threads_per_worker,
            "processes": True,
            "dashboard_address": None,
        }
    )


class SarasTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """Delegate to the task runner ``SARAS_TASK_RUNNER`` names, chosen when the run starts."""

    def __init__(self) -> None:
        self._inner: TaskRunner[Any] | None = None
        super().__init__()

    @property
    def name(self) -> str:
        """Name the runner in use (``saras`` until a run starts)."""
        return self._inner.name if self._inner is not None else "saras"

    def duplicate(self) -> SarasTaskRunner:
        """Return an unstarted copy (Prefect duplicates the runner for every flow run)."""
        return type(self)()

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectFuture[Any]:
        """Submit a task run to the runner in use."""
        return self._started_inner().submit(task, parameters, wait_for, dependencies)

    def map(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
    ) -> PrefectFutureList[Any]:
        """Map a task over its iterable parameters on the runner in use."""
        return self._started_inner().map(task, parameters, wait_for)

    def cancel_all(self) -> None:
        """Cancel what the runner in use has pending, when it can."""
        cancel = getattr(self._inner, "cancel_all", None)
        if cancel is not None:
            cancel()

    def _started_inner(self) -> TaskRunner[Any]:
        if self._inner is None:
            raise RuntimeError("The task runner must be started before submitting work.")
        return self._inner

    def __enter__(self) -> SarasTaskRunner:
        super().__enter__()
        inner = build_task_runner()
        inner.__enter__()
        self._inner = inner
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        inner, self._inner = self._inner, None
        try:
            if inner is not None:
                inner.__exit__(exc_type, exc_value, traceback)
        finally:
            super().__exit__(exc_type, exc_value, traceback)
