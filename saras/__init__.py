"""Saras: the batch side of a multi-broker smallcase trading platform."""

__version__ = "0.1.0"
