"""Queries and bulk writes over the platform schema (no Prefect here)."""
