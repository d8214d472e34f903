"""Prefect flows: one deployable flow per file (entrypoints in prefect.yaml).

``kit/`` holds what the flows share; ``demo.py`` is the story ``saras demo`` runs with them.
"""
