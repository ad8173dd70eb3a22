"""Asynchronous RL end to end (`trainer.max_staleness`, rlsys/trainer/async_trainer.py), on CPU
with the embedded GRPO recipe in split placement (gloo weight sync).

Two runs of `python -m rlsys.main` (plus one resume): a one-step-off run killed inside step 5 and
resumed, which must then learn with every trained sample at most one version old, and a run whose
rollout process is SIGKILLed while a generation is in flight. `max_staleness=0` (the synchronous
loop) is checked against colocate in tests/integration/test_recipes.py.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_checkpoint import batch_uids, kill_session, session_processes, start_run, wait_for
from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow
ASYNC = ("+recipe=grpo", "placement=split", "trainer.max_staleness=1", "weight_sync.verify=true")


def uid_rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "batch_uids.jsonl").read_text().splitlines()]


def test_one_step_off_killed_and_resumed_learns_with_staleness_at_most_one(tmp_path):
    overrides = (*ASYNC, "trainer.save_freq=4")
    proc = start_run(tmp_path, *overrides, env_extra={"RLSYS_TEST_STEP_SLEEP_S": "2"})
    wait_for(lambda: (tmp_path / "checkpoints/global_step_4/COMPLETE").exists() and 5 in batch_uids(tmp_path), proc)
    assert kill_session(proc) == []
    killed_step_5 = [r["uids"] for r in uid_rows(tmp_path) if r["step"] == 5]

    proc = run_main(tmp_path, *overrides)  # the recipe's 100 steps, resumed from global_step_4
    assert proc.returncode == 0
    assert "(step 4)" in proc.stdout and "tis_cap=2.0" in proc.stdout
    # Batch 5 was in flight at the save: its prompts are drawn again on resume, not skipped.
    resumed_step_5 = [r["uids"] for r in uid_rows(tmp_path) if r["step"] == 5][-1]
    assert killed_step_5 == [resumed_step_5]
    steps = {}
    for row in read_metrics(tmp_path):
        if row["step"] > 0:
            steps[row["step"]] = row  # the resumed run's row wins
    assert sorted(steps) == list(range(1, 101))
    for step, row in steps.items():
        assert row["async/actor_version"] == step - 1
        assert 0 <= row["async/actor_version"] - row["async/rollout_weight_version_min"] <= 1, step
        assert row["async/staleness_max"] <= 1 and row["timing_s/wait_for_rollout"] >= 0
        assert row["timing_s/wait_for_train"] >= 0
    assert sum(row["async/staleness_mean"] for row in steps.values()) > 50  # mostly one step off, not synchronous
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["val_score_final"] - summary["val_score_initial"] >= 0.25, summary["val_history"]


def test_rollout_killed_during_generation_fails_the_run_naming_the_rank(tmp_path):
    proc = start_run(tmp_path, *ASYNC, "trainer.total_steps=4", "trainer.test_freq=0", "trainer.val_before_train=false",
                     "trainer.worker_timeout_s=120", env_extra={"RLSYS_TEST_KILL_ROLLOUT_AT_STEP": "2"})
    try:
        rc = proc.wait(timeout=400)
        deadline = time.time() + 30  # Ray's shutdown reaps its processes just after the driver exits
        while session_processes(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        leaked = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in session_processes(proc.pid)]
    finally:
        kill_session(proc, timeout_s=5)
    log = (tmp_path / "driver.log").read_text()
    assert rc != 0 and "SIGKILL rollout rank 0" in log
    last = log.strip().splitlines()[-1]
    assert "worker group 'rollout.rollout', method 'generate_sequences_async', rank 0" in last, last
    assert "TimeoutError" not in last, last
    assert leaked == [], f"processes of the failed run still alive: {leaked}"
