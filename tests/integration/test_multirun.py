"""`python -m rlsys.main -m ...` runs each job in its own dir, writes sweep_summary.csv, leaks nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def processes_with_marker(marker: str) -> list[int]:
    """Pids whose environment carries `marker`: the sweep and everything it started (Ray's
    raylet/GCS/workers and vLLM engines inherit the environment), even once orphaned."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def test_sweep_of_two_values(tmp_path):
    marker = f"RLSYS_SWEEP_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    cmd = [sys.executable, "-m", "rlsys.main", "-m", "+recipe=grpo", "trainer.total_steps=2", "trainer.test_freq=2",
           "trainer.seed=1,2", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, **{key: value}), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "0" / "summary.json").exists() and (tmp_path / "1" / "summary.json").exists()
    with open(tmp_path / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert "trainer.seed=1" in rows[0]["overrides"] and "trainer.seed=2" in rows[1]["overrides"]
    assert all(r["status"] == "ok" and float(r["val_score_final"]) >= 0 for r in rows)
    assert (tmp_path / "0" / "reward_curve.png").exists()
    time.sleep(2)  # let exiting children finish
    assert processes_with_marker(marker) == []  # no Ray or vLLM process outlives the sweep
