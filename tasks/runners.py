"""Moved to ``flows.kit.runners``; kept for flows/rebalance.py until it imports from there."""

from flows.kit.runners import SarasTaskRunner, TaskRunnerSettings, build_task_runner

__all__ = ["SarasTaskRunner", "TaskRunnerSettings", "build_task_runner"]
