"""The package version, in one place (read by the package, the run directory and the report)."""

__version__ = "0.1.0"
