"""The package version, in the lowest layer so that every layer can record it (checkpoint sidecars, reports)."""
__version__ = "0.1.0"
