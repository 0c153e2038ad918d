"""tune-all: every template over a preset on the real OpenCL device (PoCL here), resumable, then an export."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from db_helpers import export_lines, file_digest

from tunesvc import templates
from tunesvc.tuning import presets as ta
from tunesvc.cli import main
from tunesvc.errors import UsageError

TINY = ta.Preset("tiny", "test preset", {"matmul": ((32, 32, 32),), "reduce": ((4, 256),)}, trials=3,
                 dtypes=("float32", "float16"))


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(ta.PRESETS, "tiny", TINY)
    return "tiny"


@pytest.mark.parametrize("preset", sorted(ta.PRESETS))
def test_every_builtin_template_has_valid_shapes_in_every_preset(preset):
    for name in templates.BUILTIN:
        tpl = templates.get(name)
        shapes = ta.shapes_for(ta.PRESETS[preset], tpl)
        assert shapes and all(tpl.parse_shape(s) == tuple(s) for s in shapes), name


def test_tune_all_is_resumable_and_exports(tmp_path, tiny, cl_info):
    db, out = tmp_path / "t.db", tmp_path / "out.jsonl.gz"
    events = []
    r = ta.tune_all(cl_info, tiny, db=db, out=out, templates_only=["matmul", "reduce_sum"], on_progress=events.append)
    tuned = [o for o in r.outcomes if o.status == "tuned"]
    dtypes = ["float32", "float16"] if cl_info.fp16 else ["float32"]
    assert [str(o.problem) for o in tuned] == [f"{p} {d}" for p in ("matmul 32x32x32", "reduce_sum 4x256") for d in dtypes]
    assert all(o.new_trials == 3 and o.best_gflops for o in tuned)
    if not cl_info.fp16:  # PoCL: float16 problems are skipped with the reason, not failed
        assert {o.status for o in r.outcomes if o.problem.dtype == "float16"} == {"skipped"}
    assert [e.done for e in events] == sorted(e.done for e in events) and events[-1].done == events[-1].total == 6 * len(dtypes)
    planned = len([o for o in r.outcomes if o.status != "skipped"])
    assert {e.problems for e in events} == {planned}  # counted truthfully from the first event on
    assert [e.problems_done for e in events] == sorted(e.problems_done for e in events) and events[-1].problems_done == planned
    lines = export_lines(out)
    assert r.export.records == len(lines) - 1 == 6 * len(dtypes) and {x["device_name"] for x in lines[1:]} == {cl_info.name}

    again = ta.tune_all(cl_info, tiny, db=db, out=tmp_path / "again.jsonl.gz", templates_only=["matmul", "reduce_sum"])
    assert {o.status for o in again.outcomes if o.problem.dtype == "float32"} == {"done earlier"}
    assert file_digest(again.export.path) == file_digest(out)  # nothing new measured: the same bytes


def test_bad_preset_and_budget(tmp_path, cl_info):
    with pytest.raises(UsageError, match="unknown preset"):
        ta.tune_all(cl_info, "huge", db=tmp_path / "t.db")
    with pytest.raises(UsageError, match="time-budget"):
        ta.tune_all(cl_info, "small", time_budget=0, db=tmp_path / "t.db")
    res = CliRunner().invoke(main, ["tune-all", "--preset", "huge", "--db", str(tmp_path / "t.db")])
    assert res.exit_code == 2


def test_cli_tune_all_json(tmp_path, tiny, cl_info):
    out = tmp_path / "cli.jsonl"
    res = CliRunner().invoke(main, ["tune-all", "--device", cl_info.id, "--preset", tiny, "--template", "matmul",
                                    "--db", str(tmp_path / "t.db"), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["export"]["records"] == len(export_lines(out)) - 1 > 0
    assert {p["status"] for p in data["problems"]} <= {"tuned", "skipped"}


def test_an_output_folder_that_does_not_exist_is_refused_before_tuning(tmp_path, tiny, cl_info):
    db = tmp_path / "t.db"
    with pytest.raises(UsageError, match="does not exist"):
        ta.tune_all(cl_info, tiny, db=db, out=tmp_path / "missing" / "out.jsonl", templates_only=["matmul"])
    assert not db.exists()  # nothing was tuned for an export that could not be written
