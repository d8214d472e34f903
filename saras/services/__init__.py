"""Use cases: what the CLI and the Prefect tasks call."""
