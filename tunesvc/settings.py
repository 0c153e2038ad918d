"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ENV_DB = "TUNESVC_DB"
ENV_SHIPPED = "TUNESVC_SHIPPED_DB"


def db_path(db: str | os.PathLike | None = None) -> "Path | ServerURL":
    """The tuning database a ``db`` argument (``--db``) names: ``db`` itself, else ``$TUNESVC_DB``, else
    ``$XDG_CACHE_HOME/tunesvc/tunesvc.db`` (``~/.cache`` by default). A file as an absolute path (``~``
    expanded), so one file is one database whatever the spelling or the working directory; a PostgreSQL
    server's database (``postgresql://user@host/db``) as a :class:`ServerURL`."""
    if isinstance(db, ServerURL):
        return db
    if not db:
        db = os.environ.get(ENV_DB) or _user_cache() / "tunesvc.db"
    if is_server_url(db):  # taken as a path, it would silently become a new SQLite file under ./postgresql:/
        return ServerURL(str(db))
    return Path(os.path.abspath(os.path.expanduser(db)))


def is_server_url(db: str | os.PathLike) -> bool:
    """Whether a ``--db`` value is a database server's URL (``postgresql://``, ``postgres://``,
    ``postgresql+psycopg://``) rather than a file path."""
    if isinstance(db, ServerURL):
        return True
    scheme, sep, _ = str(db).partition("://")
    return bool(sep) and scheme.split("+")[0].lower() in ("postgresql", "postgres")


@dataclass(frozen=True)
class ServerURL:
    """A tuning database on a PostgreSQL server, as its URL (``postgresql://user:secret@host:5432/db``).
    ``str()`` of it is the URL without its password: it goes into messages and logs; ``url`` is the
    URL itself, for the driver."""

    url: str

    def __str__(self) -> str:
        return _redacted(self.url)

    def __repr__(self) -> str:
        return repr(str(self))

    def exists(self) -> bool:
        """A database on a server is there to connect to (opening it says whether it is)."""
        return True

    def is_file(self) -> bool:
        return False


def _redacted(url: str) -> str:
    """A URL without its password (user:secret@host -> user:***@host, ?password=secret ->
    ?password=***): error lines reach logs."""
    scheme, _, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if at and ":" in auth:
        auth = auth.split(":", 1)[0] + ":***"
    host = re.sub(r"(?i)(password=)[^&]*", r"\1***", host)
    return f"{scheme}://{auth}{at}{host}"


def default_db_path() -> "Path | ServerURL":
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


ENV_DEMAND = "TUNESVC_DEMAND"


def demand_recording() -> bool:
    """Whether lookups answered below ``exact`` are counted into the tuning database they read
    (``tunesvc demand``): ``$TUNESVC_DEMAND``, on unless it is 0, false, no or off. Read when a
    lookup is resolved, so a change takes effect on the next cold lookup (or after ``clear_cache``)."""
    return os.environ.get(ENV_DEMAND, "1").strip().lower() not in ("0", "false", "no", "off")
