"""The tuning database: its schema (:mod:`.schema`), the one writer (:class:`Store`), the lookup's
read-only reader (:mod:`.reader`), export and import (:mod:`.exchange`)."""


def __getattr__(name: str):
    # Store needs sqlite-utils; the lookup imports this package for its reader alone and must stay light.
    if name == "Store":
        from .store import Store

        return Store
    raise AttributeError(f"module 'tunesvc.cache' has no attribute {name!r}")
