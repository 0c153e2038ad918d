"""Where the exporters write: a new file or a regular one replaced whole, never a device node or a
folder (export once replaced /dev/full with a regular file). One owner for both writers (the
tunesvc export in :mod:`.exchange`, the Kernel Tuner cache in :mod:`.interop`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UsageError


def cannot_write(path: Path, e: OSError) -> UsageError:
    return UsageError(f"cannot write {str(path)!r}: {e.strerror or e}; choose another path")


def check_target(path: Path) -> None:
    """Refuse ``path`` unless it is a new name or a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise cannot_write(path, e) from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{str(path)!r} is not a regular file; export writes a new file or replaces a regular one: "
                         "choose another path")


def temporary(path: Path, tag: str) -> Path:
    """A new file beside ``path`` under a short name (the real name may already be as long as a name
    can be), created with the permissions a plain open() gives. OSError where none can be made."""
    attempt = 0
    while True:
        tmp = path.with_name(f".tunesvc-{tag}-{os.getpid()}-{attempt}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            attempt += 1


def replace(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` over ``path``, unless ``path`` became a device node or a folder meanwhile."""
    check_target(path)
    os.replace(tmp, path)


def write_atomically(path: Path, data: bytes, tag: str) -> None:
    """The whole file or none: written beside ``path`` and renamed over it."""
    check_target(path)
    tmp = None
    try:
        tmp = temporary(path, tag)
        tmp.write_bytes(data)
        replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
