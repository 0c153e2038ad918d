"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

ENV_DB = "TUNESVC_DB"
ENV_SHIPPED = "TUNESVC_SHIPPED_DB"


def default_db_path() -> Path:
    """``$TUNESVC_DB``, else ``$XDG_CACHE_HOME/tunesvc/tunesvc.db`` (``~/.cache`` by default)."""
    env = os.environ.get(ENV_DB)
    if env:
        return Path(env).expanduser()
    return _xdg_cache() / "tunesvc" / "tunesvc.db"


def _xdg_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))


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
    return _xdg_cache() / "tunesvc"
