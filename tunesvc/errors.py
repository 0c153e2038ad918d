"""Every exception tunesvc raises on purpose, in one place.

Errors that come from what a user typed or passed (a shape, a template name, a
device, an import file) subclass :class:`UsageError`; the CLI turns those into
exit code 2 with the one-line message.
"""

from __future__ import annotations

import importlib


def clip(value, limit: int = 60) -> str:
    """A value for a one-line message: its repr, cut to about ``limit`` characters (a name may be
    131 KB long, and the message must still be one line)."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


class TunesvcError(Exception):
    """Base class of every tunesvc error."""


class UsageError(TunesvcError):
    """Input from the user is invalid; the message says how to fix it."""


class UnknownTemplateError(UsageError):
    """No template is registered under that name."""


class InvalidShapeError(UsageError):
    """A shape does not parse or is out of range for the template."""


class UnsupportedDtypeError(UsageError):
    """The dtype is unknown, not offered by the template, or missing on the device."""


class DeviceNotFoundError(UsageError):
    """No device matches the given id, name or fingerprint."""


class DeviceUnusableError(DeviceNotFoundError):
    """The named device is listed by its driver but cannot build and run a trivial kernel."""


class InvalidConfigError(UsageError):
    """A config names unknown parameters, has values outside the space, or breaks a constraint."""


class ImportFileError(UsageError):
    """A tuning file to import is unreadable, corrupt or of an unknown format."""


class MissingDependencyError(TunesvcError):
    """An optional dependency is needed for this feature but is not installed."""


class BackendError(TunesvcError):
    """A device backend failed outside of a single candidate's evaluation."""


class CandidateError(TunesvcError):
    """One candidate config failed; ``reason`` is a short failure class."""

    reason = "runtime"

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BuildError(CandidateError):
    """The kernel source did not compile with this config's defines."""

    reason = "build"


class LaunchError(CandidateError):
    """The kernel compiled but could not be launched or failed while running."""

    reason = "launch"


class WrongResultError(CandidateError):
    """The kernel ran but its output does not match the float64 reference."""

    reason = "wrong_result"


class StoreError(TunesvcError):
    """The tuning database cannot be opened or written."""


# ---- optional dependencies: imported where needed, with a message that says what to install
_HINTS = {
    "optuna": "pip install optuna",
    "pyopencl": "pip install pyopencl (and a driver: pip install 'tunesvc[intel]' for the CPU)",
    "pycuda": "pip install 'tunesvc[pycuda]' on a machine with an NVIDIA GPU and the CUDA toolkit",
    "uvicorn": "pip install 'tunesvc[service]'",
    "matplotlib": "pip install 'tunesvc[plot]'",
    "starlette": "pip install 'tunesvc[service]'",
}


def require(module: str):
    """Import and return ``module``, or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise MissingDependencyError(f"{module} is needed here but not installed ({e}); {_HINTS.get(top, f'pip install {top}')}") from None
