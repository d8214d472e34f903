"""Broker protocol, error classes, adapters (paper, alpaca, zerodha) and their registry."""
