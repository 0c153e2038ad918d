"""What every command shares: one-line errors, JSON and table output, the common options."""

from __future__ import annotations

import functools
import json
import re

import click

from ..errors import MissingDependencyError, StoreError, TunesvcError, UsageError, clip


#: what a terminal must not be sent from a stored string: control characters (C0 but for none, DEL,
#: C1: escape sequences set titles, move the cursor, hide text), lone surrogates (not encodable) and
#: the bidirectional overrides (they reorder what is shown)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
#: the longest error line printed (a message may quote a 131 KB argument)
MAX_MESSAGE = 2000


def clean(text) -> str:
    """``text`` fit for a terminal: every unsafe character written as its escape (ESC as \\x1b)."""
    text = str(text)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def one_line(message) -> str:
    """A message cleaned and, if long, cut in the middle: a quoted argument makes it long, and its
    end often says what to do."""
    text = clean(message)
    half = MAX_MESSAGE // 2
    return text if len(text) <= MAX_MESSAGE else f"{text[:half]} ... {text[-half:]}"


class CliUsageError(click.UsageError):
    """A usage error printed as one line, without click's 'Try --help' footer."""

    def show(self, file=None):
        click.echo(f"Error: {one_line(self.format_message())}", err=True)


class CliError(click.ClickException):
    """Any other library error: exit code 1, one line."""

    def show(self, file=None):
        click.echo(f"Error: {one_line(self.format_message())}", err=True)


def library_errors(fn):
    """Turn library errors into exit code 2 (usage, the database, the file system) or 1 (anything
    else) with one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UsageError, StoreError) as e:
            raise CliUsageError(str(e)) from None
        except OSError as e:  # a path no file system takes, a full disk: the user's to fix, in one line
            where = f" {clip(e.filename, 80)}" if e.filename else ""
            raise CliUsageError(f"cannot use{where}: {e.strerror or e}") from None
        except (MissingDependencyError, TunesvcError) as e:
            raise CliError(str(e)) from None

    return wrapper


def check_count(value: int | None, flag: str, low: int, high: int) -> None:
    """A whole number in [low, high] (or None), else UsageError naming the flag."""
    if value is not None and value < low:
        raise UsageError(f"{flag} must be at least {low}; got {clip(value, 30)}")
    if value is not None and value > high:
        raise UsageError(f"{flag} must be at most {high}; got {clip(value, 30)}")


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain aligned text table; cells are cleaned for the terminal (they hold stored strings)."""
    cells = [[clean(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


# plain paths: the library says in one line what is wrong with one (a folder, a device node), where
# click's own check would print its usage text around it
db_option = click.option("--db", type=click.Path(), default=None, envvar="TUNESVC_DB",
                         help="Tuning database: a file, or a PostgreSQL server's database as postgresql://user@host/db "
                              "(default: $TUNESVC_DB or ~/.cache/tunesvc/tunesvc.db).")
device_option = click.option("--device", default=None, help="Device id (opencl:0:0), fingerprint or name substring; default: first GPU, else first CPU.")
device_filter_option = click.option("--device", default=None, help="Only records of this device: a fingerprint key or a substring of its name.")
dtype_option = click.option("--dtype", default="float32", show_default=True, help="Element type: float32 or float16.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def fmt_time(t: float | None) -> str:
    if t is None or t == float("inf"):
        return "-"
    return f"{t * 1e3:.3f} ms" if t >= 1e-3 else f"{t * 1e6:.1f} us"


def ceilings_in(db, device_key: str):
    """Stored roofline ceilings of a device in the database ``db`` names (None: no file, no row)."""
    from ..cache import Store
    from ..measure import roofline
    from ..settings import db_path

    if not db_path(db).exists():  # no database yet: nothing measured (any other problem is the user's to hear)
        return None
    store = Store(db, readonly=True)
    try:
        return roofline.stored(store, device_key)
    finally:
        store.close()


# ---- how much the command says: -v / -q -------------------------------------------------
_VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """-q is -1, nothing 0, -v 1, -vv 2: logs of tunesvc (and, at -vv, of Optuna) on stderr.
    This is the application configuring logging; the library itself only logs."""
    import logging

    _VERBOSITY["level"] = level
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("tunesvc")
    log.handlers[:] = [handler]
    log.setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(level, logging.DEBUG))
    log.propagate = False
    try:  # Optuna says every study it creates at INFO: the tool shows that only at -vv
        import optuna

        optuna.logging.set_verbosity(optuna.logging.DEBUG if level >= 2 else optuna.logging.WARNING)
    except ImportError:
        pass


def quiet() -> bool:
    """-q: no progress display, only results and errors."""
    return _VERBOSITY["level"] < 0


#: the version of every --json output's layout (a field is only added within a version)
JSON_SCHEMA_VERSION = 1


def emit_document(**fields) -> None:
    """A --json output as every command writes one: an object that starts with ``schema_version``
    (lists go under a name, never bare), numbers as numbers, units in the key names."""
    emit_json({"schema_version": JSON_SCHEMA_VERSION, **fields})
