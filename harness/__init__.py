"""Shadowline: the domain (records, capture store, faults, checks, policy, CLI)."""

__version__ = "0.1.0"
