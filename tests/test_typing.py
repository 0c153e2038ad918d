"""The package's annotations hold: mypy (configured in pyproject.toml's [tool.mypy]) finds no error in
tunesvc/, and the package says it is typed (py.typed, shipped as package data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_marked_typed():
    assert (ROOT / "tunesvc" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


def test_mypy_finds_no_error():
    r = subprocess.run([sys.executable, "-m", "mypy", "tunesvc"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in r.stdout.splitlines() if ": error:" in line]
    assert r.returncode == 0 and not errors, "\n".join(errors[:60]) or r.stdout[-2000:] + r.stderr[-2000:]
