"""Test doubles that speak the brokers' and data sources' real wire formats (no network)."""
