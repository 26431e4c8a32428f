"""The package version, importable by every layer without importing the package root."""

__version__ = "0.2.0"
