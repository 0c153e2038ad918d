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


def test_every_shipped_file_imports_on_its_own_with_nothing_rejected(tmp_path):
    """Each file alone, so one bad file cannot hide behind the others' records."""
    from tunesvc.cache.exchange import import_files

    for f in sorted(SHIPPED.glob("*.jsonl*")):
        summary = import_files([str(f)], db=tmp_path / f"{f.name}.db")
        assert summary.added > 0 and not summary.rejected, (f.name, summary.rejected, summary.examples[:3])


def test_the_llm_results_ship_for_each_cpu_driver_at_the_presets_shapes(tmp_path):
    """tune-all --preset llm's exports: one per driver, every record a problem of the preset."""
    from tunesvc import templates
    from tunesvc.cache import Store
    from tunesvc.cache.exchange import import_files
    from tunesvc.tuning.presets import PRESETS, shapes_for

    files = sorted(SHIPPED.glob("*-llm.jsonl*"))
    assert len(files) >= 2, "tuning_db/ ships no llm results for the CPU drivers"
    llm = PRESETS["llm"]
    for f in files:
        import_files([str(f)], db=tmp_path / f"{f.name}.db")
        records = list(Store(tmp_path / f"{f.name}.db").records())
        assert len({r.fingerprint.driver for r in records}) == 1, f.name  # one file per driver
        kinds = {r.template for r in records}
        assert {"gemv_q", "gemv_q_zp", "attention", "attention_causal"} <= kinds, (f.name, kinds)
        for r in records:
            assert tuple(r.shape) in {tuple(s) for s in shapes_for(llm, templates.get(r.template))}, (f.name, r.template, r.shape)
            assert r.dtype in llm.dtypes


def test_a_fresh_process_gets_the_llm_shape_itself_from_the_shipped_results(tmp_path, cl_info):
    """gemv_q at the 8B model's q and o projection answers from its own shipped shape, not a neighbour's."""
    code = f"""
import tunesvc
r = tunesvc.lookup("gemv_q", (1, 4096, 4096, 4, 32), device={cl_info.fingerprint.key!r}, db={str(tmp_path / 'empty.db')!r})
print(r.level, "x".join(map(str, r.tuned_shape or ())))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "TUNESVC_SHIPPED_DB"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["shipped", "1x4096x4096x4x32"]
