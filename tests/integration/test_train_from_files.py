"""Train 2 steps from a parquet file in verl's layout and validate on a second file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlsys.trainer.generations import read_val_generations
from tests.integration.test_recipes import ROOT, read_metrics, run_main

pytestmark = pytest.mark.slow


def test_two_steps_from_parquet_then_validate_on_second_file(tmp_path):
    data_dir = tmp_path / "data"
    made = subprocess.run([sys.executable, "scripts/make_dataset.py", "--out", str(data_dir), "--train-size", "64",
                           "--val-size", "16"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    run_dir = tmp_path / "run"
    proc = run_main(run_dir, "+recipe=grpo", f"data.train_files={data_dir / 'train.parquet'}",
                    f"data.val_files=[{data_dir / 'val.parquet'}]", "trainer.total_steps=2", "trainer.test_freq=2",
                    "trainer.log_level=debug")
    assert proc.returncode == 0
    # Issue 15.5: debug brings the workers' output back to the console, with Ray's prefixes and
    # vLLM's per-sync RotaryEmbedding warning (which the default log level drops).
    console = proc.stdout + proc.stderr
    assert "(WorkerDict pid=" in console and "RotaryEmbedding: Failed to load weights" in console
    assert [r["step"] for r in read_metrics(run_dir) if r["step"] > 0] == [1, 2]
    generations = read_val_generations(run_dir / "val_generations.jsonl", step=2)
    assert len(generations) == 16  # the validation file's rows, not the built-in task's 128
