"""The library's version, recorded with every run (never part of a cache key)."""

__version__ = "0.2.0"
