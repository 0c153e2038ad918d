"""User templates: the example in examples/ tunes through the same CLI and API as a built-in,
every config of its space is correct on an odd size, and broken template files are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tunesvc
from tunesvc import templates
from tunesvc.cli import main
from tunesvc.measure.evaluator import Evaluator
from tunesvc.search import SearchSpace
from tunesvc.templates.base import Context

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "saxpy.py")


def test_every_config_of_the_example_is_correct_on_an_odd_size(cl_device):
    tpl = templates.get(EXAMPLE)
    assert tpl.name == "saxpy" and templates.get("saxpy") is tpl
    shape = tpl.parse_shape("1001")
    space = SearchSpace.from_template(tpl, Context(shape, "float32", cl_device.info))
    assert len(space) >= 30  # group_not_beyond_n drops the widest groups
    ev = Evaluator(cl_device, tpl, shape, "float32")
    bad = [(dict(c), m.status, m.reason) for c in space.configs if not (m := ev.evaluate(c)).ok]
    assert not bad


def test_cli_tunes_and_looks_up_a_user_template(db_path):
    runner = CliRunner()
    r = runner.invoke(main, ["tune", EXAMPLE, "--shape", "100003", "--trials", "3", "--seed", "0", "--db", str(db_path)])
    assert r.exit_code == 0, r.output
    assert "tuned saxpy 100003 float32" in r.output
    r = runner.invoke(main, ["lookup", EXAMPLE, "--shape", "100003", "--db", str(db_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["level"] == "exact"
    r = runner.invoke(main, ["show", "--template", "saxpy", "--db", str(db_path)])
    assert r.output.count("saxpy") >= 3


def test_api_runs_a_user_template_with_its_tuned_config(db_path):
    result = tunesvc.tune(EXAMPLE, (5000,), trials=2, seed=3, db=str(db_path))
    assert result.best is not None and result.best.ok
    x, y = np.arange(5000, dtype=np.float32), np.ones(5000, dtype=np.float32)
    out = tunesvc.run_tuned("saxpy", {"a": np.array([2.0], np.float32), "x": x, "y": y}, (5000,), "float32", db=str(db_path))["out"]
    np.testing.assert_array_equal(out, 2 * x + 1)


@pytest.mark.parametrize("body,says", [
    ("x = 1\n", "must define TEMPLATE"),
    ("import nonexistent_module_xyz\n", "failed to import"),
    ("TEMPLATE = 42\n", "must define TEMPLATE"),
])
def test_broken_template_files_exit_2_with_one_line(tmp_path, db_path, body, says):
    path = tmp_path / "mine.py"
    path.write_text(body)
    r = CliRunner().invoke(main, ["tune", str(path), "--shape", "100", "--db", str(db_path)])
    assert r.exit_code == 2
    assert len(r.output.strip().splitlines()) == 1
    assert says in r.output
    assert not db_path.exists()


def test_missing_template_file_exits_2(db_path):
    r = CliRunner().invoke(main, ["tune", "no/such/template.py", "--shape", "100", "--db", str(db_path)])
    assert r.exit_code == 2 and "does not exist" in r.output


def _cli(*args, env):
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("tunesvc"))
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_a_user_template_answers_to_its_name_in_later_processes(tmp_path, cl_info):
    """Tuned once from its file, 'saxpy' is a name lookup, show and export take (the path is remembered)."""
    from tunesvc.cache import Store

    env, db = {"TUNESVC_CACHE_DIR": str(tmp_path / "cache")}, tmp_path / "t.db"
    r = _cli("tune", EXAMPLE, "--shape", "4099", "--trials", "2", "--device", cl_info.id, "--db", db, env=env)
    assert r.returncode == 0, r.stderr
    r = _cli("lookup", "saxpy", "--shape", "4099", "--device", cl_info.id, "--db", db, "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["level"] == "exact"
    store = Store(db)
    store.put_ceilings(cl_info.fingerprint.key, 10.0, 100.0, "2026-01-01T00:00:00+00:00", {})
    store.close()
    rows = json.loads(_cli("show", "--template", "saxpy", "--db", db, "--json", env=env).stdout)["records"]
    assert rows and all(row["roofline_fraction"] is not None for row in rows if row["status"] == "ok")
    assert _cli("export", tmp_path / "out.jsonl", "--template", "saxpy", "--db", db, env=env).returncode == 0
    moved = tmp_path / "elsewhere"
    r = _cli("lookup", "saxpy", "--shape", "4099", "--db", db, env={"TUNESVC_CACHE_DIR": str(moved)})
    assert r.returncode == 2 and "unknown template 'saxpy'" in r.stderr  # a fresh cache knows only the path


def test_an_installed_package_offers_templates_by_entry_point(tmp_path, cl_info):
    """An entry point in group tunesvc.templates makes a template known by name, as installed packages do."""
    pkg = tmp_path / "site"
    (pkg / "mytemplates-1.0.dist-info").mkdir(parents=True)
    (pkg / "mytemplates-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mytemplates\nVersion: 1.0\n")
    (pkg / "mytemplates-1.0.dist-info" / "entry_points.txt").write_text("[tunesvc.templates]\nsaxpy = mytemplates:TEMPLATE\n")
    (pkg / "mytemplates.py").write_text(f"import importlib.util\nspec = importlib.util.spec_from_file_location('ex', {EXAMPLE!r})\n"
                                        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
                                        "TEMPLATE = mod.TEMPLATE\n")
    import os

    env = {"TUNESVC_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")])}
    r = _cli("lookup", "saxpy", "--shape", "1000", "--device", cl_info.id, "--db", tmp_path / "t.db", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["level"] == "default"


@pytest.mark.parametrize("name, says", [("a" * 131_000 + ".py", "cannot be read"), ("b" * 5000, "5000 characters")])
def test_absurd_template_names_are_one_line_and_exit_2(db_path, name, says):
    r = CliRunner().invoke(main, ["tune", name, "--db", str(db_path)])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output
    assert len(r.output) < 1000  # the message does not repeat the name whole
