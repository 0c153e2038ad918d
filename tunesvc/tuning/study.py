"""Where a search keeps its record: an Optuna storage, and one study per problem in it.

Every tune is an Optuna study (:class:`tunesvc.search.live.StudySearch`): by default in an SQLite
file beside the tuning database (``tune.db`` -> ``tune.optuna.db``, never the database itself), or
in the RDB storage ``--storage`` names (PostgreSQL, for a search shared between machines).
``optuna-dashboard`` and ``optuna.visualization`` open it as it is (``tunesvc dashboard``).
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

from .. import search
from ..errors import MissingDependencyError, TunesvcError, UsageError, require
from ..settings import is_server_url
from ..types import Problem


def default_storage(db_path) -> str:
    """Optuna's study beside the tuning database: tune.db -> tune.optuna.db. The long SQLite
    timeout lets several tuning processes share the file without 'database is locked'. A tuning
    database on a PostgreSQL server keeps its studies in the same database, beside its tables."""
    if is_server_url(db_path):
        return rdb_url(db_path.url)
    p = Path(db_path).resolve()
    return f"sqlite:///{p.with_name(p.stem + '.optuna.db')}?timeout=60"


def set_aside_orphan_studies(db=None) -> Path | None:
    """Rename a study file left beside a tuning database that is gone (tune.db deleted, tune.optuna.db
    kept) to ``tune.optuna.orphan-<UTC time>.db``, and return the new path (None: nothing done).

    Its trials name configs as measured that the new database never stored: the tuner would skip
    them (the default config first), so the new database would lack them for good. Called before
    the database is opened (which creates it); the study file is only made once the database exists,
    so a study file seen first and a database then missing is an orphan, never another process's
    fresh start. A database on a server keeps its studies in itself: nothing to do."""
    from ..settings import db_path

    path = db_path(db)
    if not isinstance(path, Path):  # a server's database
        return None
    p = path.resolve()
    side = p.with_name(p.stem + ".optuna.db")
    if not side.exists() or p.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = side.with_name(f"{p.stem}.optuna.orphan-{stamp}.db")
    try:
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(side) + suffix)
            if src.exists():
                src.rename(Path(str(target) + suffix))
    except FileNotFoundError:  # another process set it aside first
        return None
    import logging

    logging.getLogger(__name__).warning(
        "%s was the study file of a tuning database that no longer exists (%s): set aside as %s, so that "
        "this database measures its configs again", side, p, target)
    return target


def rdb_url(url: str) -> str:
    """Check an Optuna RDB URL and pick an installed PostgreSQL driver for a bare postgresql://
    (SQLAlchemy 2 assumes psycopg 3, which tunesvc[postgres] installs; psycopg2 where only it is present)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise UsageError(f"--storage {url!r} is not a database URL; use e.g. postgresql://user@host/db or sqlite:///path.db")
    if scheme in ("postgresql", "postgres"):
        for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
            if importlib.util.find_spec(module):
                return f"postgresql+{driver}://" + url.split("://", 1)[1]
        raise MissingDependencyError("--storage postgresql://... needs a PostgreSQL driver: pip install 'tunesvc[postgres]'")
    return url


def study_name(problem: Problem) -> str:
    """One study per problem, named to be read in a dashboard: template, dtype, shape, device key
    and template version. (Studies of tunesvc before 0.x were named ``tunesvc|...`` and held value
    indices as parameters; they are left as they are.)"""
    device_key, template, template_hash, dtype, shape = problem.key
    return f"{template} {dtype} {shape} on {device_key} [{template_hash}]"


def study_attrs(problem: Problem, device_name: str, strategy: str) -> dict:
    """What a new study states about itself (user attrs; the objective is stated by the study layer)."""
    device_key, template, template_hash, dtype, shape = problem.key
    return {"template": template, "template_hash": template_hash, "dtype": dtype, "shape": shape,
            "device_key": device_key, "device_name": device_name, "strategy": strategy}


def make_strategy(name: str, space, seed, storage: str, study: str, attrs: dict | None = None,
                  settings: dict | None = None):
    """The strategy ``name`` searching through the study ``study`` of ``storage`` (a StudySearch),
    retried a few times: processes that create the same fresh Optuna storage at once can trip
    over each other's schema creation; the second attempt finds it made."""
    strategy = search.make(name, space, seed, **(settings or {}))  # its own settings (--strategy-option)
    for attempt in range(5):
        try:
            from ..search.live import StudySearch

            return StudySearch(strategy, storage, study, attrs)
        except TunesvcError:
            raise
        except ImportError as e:  # Optuna's word for a database driver that is not installed
            raise UsageError(f"--storage {redact(storage)!r} needs a database driver that is not installed "
                             f"({_first_line(e)}); install it, or use sqlite:///path.db") from None
        except Exception as e:  # sqlalchemy's OperationalError / IntegrityError; optuna may wrap them
            # an unknown dialect or an unparsable URL does not get better by waiting
            if attempt == 4 or isinstance(e, ValueError) or type(e).__name__ in ("NoSuchModuleError", "ArgumentError"):
                raise UsageError(f"cannot open --storage {redact(storage)!r}: {_first_line(e)}") from None
            time.sleep(0.2 * (attempt + 1))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def redact(url: str) -> str:
    """A storage URL fit to print: without a password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def storage_for(db=None, storage: str | None = None) -> str:
    """The Optuna storage of a tuning database's studies: ``storage`` (checked), else the file beside ``db``."""
    from ..settings import db_path

    return rdb_url(storage) if storage is not None else default_storage(db_path(db))


def find_study(problem: Problem, db=None, storage: str | None = None, study: str | None = None) -> tuple[str, str, int]:
    """(storage URL, study name, study id) of a problem's study; UsageError where there is none
    (nothing tuned yet), so a dashboard is not opened on nothing and no empty storage is made."""
    url = storage_for(db, storage)
    name = study or study_name(problem)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):].split("?", 1)[0]).exists():
        raise UsageError(f"no studies yet at {redact(url)!r}: tune {problem.template} first (or pass --db or --storage)")
    optuna = require("optuna")
    try:
        rdb = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as e:  # a file that is not an Optuna storage (the tuning database?), a server that is not there
        raise UsageError(f"cannot open {redact(url)!r} as an Optuna storage ({_first_line(e)[:120]}); a tuning database "
                         "keeps its studies beside it (tune.db -> tune.optuna.db): pass --db, or the --storage tune used") from None
    try:
        study_id = rdb.get_study_id_from_name(name)
    except KeyError:
        raise UsageError(f"no study {name!r} at {redact(url)!r}: tune it first, or check --shape, --dtype and --device") from None
    finally:
        rdb.engine.dispose()
    return url, name, study_id
