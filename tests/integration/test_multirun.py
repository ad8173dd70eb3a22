"""`python -m rlsys.main -m ...` runs each job in its own dir, writes sweep_summary.csv, leaks nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
LEAK_PATTERNS = ("raylet", "gcs_server", "EngineCore", "ray::")


def our_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if any(p in line for p in LEAK_PATTERNS)]


def test_sweep_of_two_values(tmp_path):
    before = our_processes()
    cmd = [sys.executable, "-m", "rlsys.main", "-m", "+recipe=grpo", "trainer.total_steps=2", "trainer.test_freq=2",
           "trainer.seed=1,2", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "0" / "summary.json").exists() and (tmp_path / "1" / "summary.json").exists()
    with open(tmp_path / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert "trainer.seed=1" in rows[0]["overrides"] and "trainer.seed=2" in rows[1]["overrides"]
    assert all(r["status"] == "ok" and float(r["val_score_final"]) >= 0 for r in rows)
    assert (tmp_path / "0" / "reward_curve.png").exists()
    assert our_processes() == before  # no Ray or vLLM process outlives the sweep
