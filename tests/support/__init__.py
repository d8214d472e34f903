"""The test kit every tier shares (plain modules; the fixtures that use them are in conftest.py).

- ``databases``: the throwaway PostgreSQL server, migrated databases, emptying them between
  tests, and pointing Saras' settings at one (what ``flow_db`` does).
- ``platform``: the demo platform with fresh simulated prices (the flows' ``platform``).
- ``flows``: answering a paused flow run from a watcher thread (``when_paused``).
- ``execution``: a real platform over a fake broker, virtual time, checkpoints, and the ledger
  invariants every execution scenario ends with (``build_platform``, ``assert_invariants``).
- ``reference``: where ``../shared/reference`` is (replayed as an extra when present).

The fixtures are defined once, in ``tests/conftest.py`` (databases, flow databases) and in the
tier's own ``conftest.py`` only where a tier adds something (the Prefect harness for
``tests/flows``, fake brokers and platforms for ``tests/reliability``).
"""
