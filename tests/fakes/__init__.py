"""Local HTTP fakes of the venues (Alpaca, Kite) for tests and benchmarks; not in the wheel."""
