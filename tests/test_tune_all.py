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
    with pytest.raises(UsageError, match="setting 'gamma'"):
        ta.tune_all(cl_info, "small", db=tmp_path / "t.db", strategy_options={"gamma": "high"})
    assert not (tmp_path / "t.db").exists()
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


def test_tune_all_takes_a_strategy_and_its_settings(tmp_path, tiny, cl_info):
    import optuna

    db = tmp_path / "t.db"
    res = CliRunner().invoke(main, ["tune-all", "--device", cl_info.id, "--preset", tiny, "--template", "reduce_sum",
                                    "--strategy", "local", "--strategy-option", "start=1", "--strategy-option",
                                    "explore=0.5", "--db", str(db), "--out", str(tmp_path / "o.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    studies = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 't.optuna.db'}")
    assert studies and {s.user_attrs["strategy"] for s in studies} == {"local"}


@pytest.mark.parametrize("args, says", [(["--strategy-option", "gamma=high"], "setting 'gamma' takes a number"),
                                        (["--strategy-option", "ring=\"nearest\""], "setting 'ring' must be one of"),
                                        (["--strategy", "random", "--strategy-option", "start=2"], "has no setting 'start'"),
                                        (["--strategy", "nosuch"], "unknown strategy")])
def test_tune_all_refuses_bad_strategy_settings_before_anything_is_measured(tmp_path, tiny, cl_info, args, says):
    db = tmp_path / "t.db"
    res = CliRunner().invoke(main, ["tune-all", "--device", cl_info.id, "--preset", tiny, *args, "--db", str(db),
                                    "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not db.exists() and not (tmp_path / "o.jsonl").exists()
