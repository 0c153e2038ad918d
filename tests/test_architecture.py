"""The package keeps the shape docs/architecture.md draws (figures: python tools/architecture.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import architecture  # noqa: E402

FIGURES = architecture.figures(ROOT / "tunesvc")
FOLDERS = {"devices", "templates", "search", "measure", "cache", "tuning", "replay", "cli", "kernels", "service", "report"}


def test_no_import_circle_of_modules_or_rooms():
    assert FIGURES["module_circles"] == []
    assert FIGURES["room_circles"] == []


def test_imports_run_down_the_rooms():
    assert FIGURES["unplaced_rooms"] == []  # every room has its place in the order
    assert len(FIGURES["back_up"]) <= 1, FIGURES["back_up"]


def test_few_modules_at_the_top_and_each_folder_one_stage():
    assert len(FIGURES["top_level_modules"]) <= 8, FIGURES["top_level_modules"]
    assert set(FIGURES["folders"]) <= FOLDERS


def test_no_function_over_60_lines():
    assert FIGURES["long_functions"] == []


@pytest.mark.parametrize("module", sorted(m for m in architecture.modules(ROOT / "tunesvc")
                                          if not m.endswith("__main__")))
def test_every_module_imports_on_its_own(module):
    """In a fresh interpreter, first of all: no module needs another imported before it."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_tool_prints_its_figures():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "architecture.py")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "circles of modules: 0" in out.stdout
    assert importlib.import_module("tunesvc")  # and the package itself imports
