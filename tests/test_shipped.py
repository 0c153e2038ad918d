"""The shipped tuning_db/: valid files, and the lookup level that serves them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tunesvc

SHIPPED = Path(__file__).resolve().parent.parent / "tuning_db"


def test_shipped_results_cover_every_builtin_template_and_import_cleanly(tmp_path):
    from tunesvc import templates
    from tunesvc.cache.exchange import import_files

    files = sorted(SHIPPED.glob("*.jsonl*"))
    assert files, "tuning_db/ ships no results"
    summary = import_files([str(f) for f in files], db=tmp_path / "t.db")
    assert summary.added > 0
    from tunesvc.cache import Store

    shipped_templates = {r.template for r in Store(tmp_path / "t.db").records()}
    assert set(templates.BUILTIN) <= shipped_templates


def test_a_fresh_process_gets_shipped_answers_for_the_cpu_device(tmp_path, cl_info):
    """With an empty database, the PoCL device is answered from tuning_db/, not the default."""
    code = f"""
import tunesvc
r = tunesvc.lookup("matmul", (1000, 1000, 1000), device={cl_info.fingerprint.key!r}, db={str(tmp_path / 'empty.db')!r})
print(r.level)
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TUNESVC_SHIPPED_DB"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "shipped"
