"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DB = "TUNESVC_DB"
ENV_SHIPPED = "TUNESVC_SHIPPED_DB"


def db_path(db: str | os.PathLike | None = None) -> Path:
    """The tuning database a ``db`` argument (``--db``) names, as an absolute path: ``db`` itself
    (``~`` expanded), else ``$TUNESVC_DB``, else ``$XDG_CACHE_HOME/tunesvc/tunesvc.db`` (``~/.cache``
    by default). Absolute, so one file is one database whatever the spelling or the working directory."""
    if not db:
        db = os.environ.get(ENV_DB) or _user_cache() / "tunesvc.db"
    if is_server_url(db):
        # Taken as a path, the URL would silently become a new SQLite file under ./postgresql:/
        from .errors import StoreError

        raise StoreError(f"--db (or ${ENV_DB}) names a PostgreSQL server ({_redacted(str(db))}); this version stores "
                         "results in SQLite files only: pass a file path")
    return Path(os.path.abspath(os.path.expanduser(db)))


def is_server_url(db: str | os.PathLike) -> bool:
    """Whether a ``--db`` value is a database server's URL (``postgresql://``, ``postgres://``,
    ``postgresql+psycopg://``) rather than a file path."""
    scheme, sep, _ = str(db).partition("://")
    return bool(sep) and scheme.split("+")[0].lower() in ("postgresql", "postgres")


def _redacted(url: str) -> str:
    """A URL without its password (user:secret@host -> user:***@host): error lines reach logs."""
    scheme, _, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if at and ":" in auth:
        auth = auth.split(":", 1)[0] + ":***"
    return f"{scheme}://{auth}{at}{host}"


def default_db_path() -> Path:
    """The database used when none is named: :func:`db_path` of None."""
    return db_path(None)


def _user_cache() -> Path:
    """The platform's cache folder for tunesvc (platformdirs: ``$XDG_CACHE_HOME/tunesvc`` or
    ``~/.cache/tunesvc`` on Linux, ``~/Library/Caches/tunesvc`` on macOS, ...)."""
    from platformdirs import user_cache_path

    return user_cache_path("tunesvc", appauthor=False)


def shipped_db_dir() -> Path:
    """``$TUNESVC_SHIPPED_DB``, else the ``tuning_db/`` folder of shipped results: beside the
    package in a checkout, or inside it when installed."""
    env = os.environ.get(ENV_SHIPPED)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent
    for candidate in (here / "tuning_db", here.parent / "tuning_db"):
        if candidate.is_dir():
            return candidate
    return here.parent / "tuning_db"


ENV_REGISTER = "TUNESVC_REGISTER_DRIVERS"
ENV_CACHE = "TUNESVC_CACHE_DIR"


def cache_dir() -> Path:
    """Where tunesvc keeps what it learns of this machine's drivers: ``$TUNESVC_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/tunesvc`` (``~/.cache/tunesvc`` by default)."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return _user_cache()


ENV_PROGRESS = "TUNESVC_PROGRESS_SECONDS"


def progress_interval() -> float:
    """Seconds between two progress lines where stderr is no terminal: ``$TUNESVC_PROGRESS_SECONDS``,
    else 10."""
    try:
        value = float(os.environ.get(ENV_PROGRESS, "10"))
    except ValueError:
        return 10.0
    return value if value >= 0 else 10.0
