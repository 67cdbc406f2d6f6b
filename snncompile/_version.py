"""The package version (one place; the root package and report.json read it)."""

__version__ = "0.1.0"
