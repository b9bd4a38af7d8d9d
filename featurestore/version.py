"""The package version (one place, read by the package, the CLI and the HTTP service)."""

__version__ = "0.1.0"
