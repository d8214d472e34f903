"""Prefect flows: one deployable flow per file (entrypoints in prefect.yaml)."""
