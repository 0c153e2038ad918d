"""The tuning database."""

from .store import Store  # noqa: F401
