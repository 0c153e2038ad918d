"""What the CLI says while it works and how it says it: -v/-q, logging, progress without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TUNESVC = str(Path(sys.executable).with_name("tunesvc"))  # the console script of this venv


def tunesvc(*args, env=None, timeout=300):
    return subprocess.run([TUNESVC, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_without_a_terminal_progress_comes_as_lines_with_an_estimate(tmp_path, cl_info):
    out = tunesvc("tune", "matmul", "--shape", "16x16x16", "--trials", "3", "--strategy", "grid", "--device", cl_info.id,
                  "--db", tmp_path / "t.db", env={"TUNESVC_PROGRESS_SECONDS": "0"})
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("tuning matmul 16x16x16:")]
    assert len(lines) >= 4, out.stderr  # started, one per trial (interval 0), done
    assert "0/3 trials" in lines[0] and "3/3 trials" in lines[-1] and all("left" in ln for ln in lines)
    assert "best" in lines[-1] and "GFLOP/s" in lines[-1]


def test_quiet_shows_no_progress_and_verbose_logs(tmp_path, cl_info):
    quiet = tunesvc("-q", "tune", "matmul", "--shape", "8x8x8", "--trials", "2", "--device", cl_info.id, "--db", tmp_path / "q.db",
                    env={"TUNESVC_PROGRESS_SECONDS": "0"})
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    assert "tuned matmul 8x8x8" in quiet.stdout
    loud = tunesvc("-vv", "tune", "matmul", "--shape", "8x8x8", "--trials", "2", "--device", cl_info.id, "--db", tmp_path / "v.db")
    assert loud.returncode == 0, loud.stderr
    assert "INFO tunesvc.tuning.tuner: tuning matmul 8x8x8 float32" in loud.stderr
    assert "DEBUG tunesvc.tuning.tuner: trial 1:" in loud.stderr and "INFO tunesvc.tuning.tuner: stopped:" in loud.stderr


def test_the_library_leaves_optunas_logging_alone(tmp_path, cl_info):
    code = ("import optuna, tunesvc; before = optuna.logging.get_verbosity(); "
            f"tunesvc.tune('matmul', (8, 8, 8), device={cl_info.id!r}, db={str(tmp_path / 't.db')!r}, strategy='tpe', "
            "trials=2, isolate=False); print(before == optuna.logging.get_verbosity())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_tune_all_counts_problems(tmp_path, cl_info):
    out = tunesvc("tune-all", "--preset", "small", "--template", "reduce_sum", "--trials", "1", "--device", cl_info.id,
                  "--db", tmp_path / "t.db", "--out", tmp_path / "o.jsonl", env={"TUNESVC_PROGRESS_SECONDS": "0"})
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("tune-all small:")]
    problems = json.loads(tunesvc("tune-all", "--preset", "small", "--template", "reduce_sum", "--trials", "1", "--device",
                                  cl_info.id, "--db", tmp_path / "t.db", "--out", tmp_path / "o2.jsonl", "--json").stdout)["problems"]
    planned = len([p for p in problems if p["status"] != "skipped"])
    assert lines and lines[-1].split(": ")[1].startswith(f"{planned}/{planned} problems"), lines
