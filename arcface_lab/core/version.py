"""The package version (here, below every wing, so that any wing may record it)."""

__version__ = "0.1.0"
