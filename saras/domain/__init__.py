"""Pure domain logic: no database, no SDK, no Prefect."""
