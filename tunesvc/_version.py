"""The package version, in a module of its own: the store stamps it on every record without
importing the package root (which imports the lookup, which imports the store)."""

__version__ = "0.1.0"
