"""Asynchronous RL end to end (`trainer.max_staleness`, rlsys/trainer/async_trainer.py), on CPU
with the embedded GRPO recipe in split placement (gloo weight sync).

Two runs of `python -m rlsys.main`: a one-step-off run whose rollout process is SIGKILLed while
a generation is in flight (step 6's, launched inside step 5, after the step-4 checkpoint), which
must fail naming the rank and leave no process behind; and its resume from that checkpoint,
which must then learn with every trained sample at most one version old. The killed run is a
module fixture both tests read. `max_staleness=0` (the synchronous loop) is checked against
colocate in tests/integration/test_recipes.py.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_checkpoint import kill_session, session_processes, start_run
from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow
ASYNC = ("+recipe=grpo", "placement=split", "trainer.max_staleness=1", "weight_sync.verify=true")
KILLED = (*ASYNC, "trainer.save_freq=4", "trainer.worker_timeout_s=120")


def uid_rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "batch_uids.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def rollout_killed_at_step_6(tmp_path_factory) -> dict:
    """The recipe's run with rollout rank 0 SIGKILLed right after step 6's generation is launched:
    {"run_dir", "rc", "log", "leaked"} (processes of its session alive 30 s after it exited)."""
    run_dir = tmp_path_factory.mktemp("async_killed")
    proc = start_run(run_dir, *KILLED, env_extra={"RLSYS_TEST_KILL_ROLLOUT_AT_STEP": "6"})
    try:
        rc = proc.wait(timeout=400)
        deadline = time.time() + 30  # Ray's shutdown reaps its processes just after the driver exits
        while session_processes(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        leaked = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in session_processes(proc.pid)]
    finally:
        kill_session(proc, timeout_s=5)
    return {"run_dir": run_dir, "rc": rc, "log": (run_dir / "driver.log").read_text(), "leaked": leaked}


def test_one_step_off_killed_and_resumed_learns_with_staleness_at_most_one(rollout_killed_at_step_6):
    run_dir = rollout_killed_at_step_6["run_dir"]
    assert rollout_killed_at_step_6["rc"] != 0
    assert (run_dir / "checkpoints/global_step_4/COMPLETE").exists()
    assert not (run_dir / "checkpoints/global_step_8").exists()
    killed_step_5 = [r["uids"] for r in uid_rows(run_dir) if r["step"] == 5]

    proc = run_main(run_dir, *KILLED)  # the recipe's 100 steps, resumed from global_step_4
    assert proc.returncode == 0
    assert "(step 4)" in proc.stdout and "tis_cap=2.0" in proc.stdout
    # Batch 5 was in flight at the save: its prompts are drawn again on resume, not skipped.
    resumed_step_5 = [r["uids"] for r in uid_rows(run_dir) if r["step"] == 5][-1]
    assert killed_step_5 == [resumed_step_5]
    steps = {}
    for row in read_metrics(run_dir):
        if row["step"] > 0:
            steps[row["step"]] = row  # the resumed run's row wins
    assert sorted(steps) == list(range(1, 101))
    for step, row in steps.items():
        assert row["async/actor_version"] == step - 1
        assert 0 <= row["async/actor_version"] - row["async/rollout_weight_version_min"] <= 1, step
        assert row["async/staleness_max"] <= 1 and row["timing_s/wait_for_rollout"] >= 0
        assert row["timing_s/wait_for_train"] >= 0
    assert sum(row["async/staleness_mean"] for row in steps.values()) > 50  # mostly one step off, not synchronous
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val_score_final"] - summary["val_score_initial"] >= 0.25, summary["val_history"]


def test_rollout_killed_during_generation_fails_the_run_naming_the_rank(rollout_killed_at_step_6):
    log = rollout_killed_at_step_6["log"]
    assert rollout_killed_at_step_6["rc"] != 0 and "SIGKILL rollout rank 0" in log
    last = log.strip().splitlines()[-1]
    assert "worker group 'rollout.rollout', method 'generate_sequences_async', rank 0" in last, last
    assert "TimeoutError" not in last, last
    leaked = rollout_killed_at_step_6["leaked"]
    assert leaked == [], f"processes of the failed run still alive: {leaked}"
