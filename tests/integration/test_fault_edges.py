"""Issue 16 end to end: nonsense config stops before Ray, bounded and counted reward errors,
SIGTERM during a save, and a checkpoint file gone missing named when resuming.

Runs of `python -m rlsys.main` on CPU (~40 s each on 2 cores); the save is widened by the
test-only `RLSYS_TEST_SLEEP_DURING_SAVE_S` so the signal lands inside it.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pytest

from tests.integration.test_checkpoint import kill_session, start_run, wait_for
from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow
# rollout.name=hf: rewards, signals and checkpoints are engine-independent here, and the
# transformers engine starts ~8 s faster than vLLM (engine faults: test_engine_and_shm_faults.py)
SHORT = ("+recipe=grpo", "trainer.test_freq=0", "trainer.val_before_train=false", "rollout.name=hf")
REWARDS = textwrap.dedent('''
    import time

    def always_fails(data_source, solution_str, ground_truth, extra_info=None):
        raise RuntimeError(f"cannot score {ground_truth}")

    def some_fail_some_hang(data_source, solution_str, ground_truth, extra_info=None):
        if int(ground_truth) % 4 == 0:
            raise ValueError(f"no verifier for {ground_truth}")
        if int(ground_truth) % 7 == 0:
            while True:  # hangs forever
                time.sleep(3600)
        return float(solution_str.strip().startswith(ground_truth))
''')


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("override, message", [
    ("trainer.total_steps=-1", "trainer.total_steps=-1 is out of range: must be >= 1"),
    ("data.max_response_length=-8", "data.max_response_length=-8 is out of range: must be >= 1"),
])
def test_out_of_range_key_fails_before_ray_starts(tmp_path, override, message):
    start = time.monotonic()
    proc = run_main(tmp_path, "+recipe=grpo", override)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0 and message in proc.stderr
    assert last_line(proc.stderr) == f"rlsys: run failed: ValueError: {message}"
    assert "derived batch shapes" not in proc.stdout and "Ray" not in proc.stdout + proc.stderr.replace(message, "")
    print(f"\n[{override}] failed after {elapsed:.1f} s")


def test_failing_and_hanging_reward_samples_are_bounded_counted_and_warned(tmp_path):
    (tmp_path / "rewards.py").write_text(REWARDS)
    proc = run_main(tmp_path / "run", *SHORT, "trainer.total_steps=2", f"reward.fn={tmp_path / 'rewards.py'}:"
                    "some_fail_some_hang", "reward.on_error=zero", "reward.timeout_s=0.5",
                    "reward.max_error_fraction=0.9")  # errors come in groups of rollout.n: keep clear of the limit
    assert proc.returncode == 0
    rows = [r for r in read_metrics(tmp_path / "run") if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2]  # the worker stayed usable after step 1's timeouts
    warnings = [line[line.index("warning: step "):] for line in proc.stderr.replace("\r", "\n").splitlines()
                if "warning: step " in line]
    assert [w.split(":")[1] for w in warnings] == [" step 1", " step 2"]  # one line per step with errors
    assert all("some_fail_some_hang failed on" in w for w in warnings)
    for row, warning in zip(rows, warnings):
        num_errors = int(row["reward/num_errors"])
        assert 0 < num_errors <= 57 and f"failed on {num_errors}/64 samples" in warning
    timing = [round(r["timing_s/reward"], 1) for r in rows]
    print(f"\n[hanging reward, timeout 0.5 s] errors per step {[r['reward/num_errors'] for r in rows]}, "
          f"reward phase s {timing}")


def test_all_error_run_stops_at_the_error_fraction(tmp_path):
    (tmp_path / "rewards.py").write_text(REWARDS)
    fn = f"{tmp_path / 'rewards.py'}:always_fails"
    proc = run_main(tmp_path / "run", *SHORT, "trainer.total_steps=3", f"reward.fn={fn}", "reward.on_error=zero")
    assert proc.returncode != 0
    line = last_line(proc.stderr)
    assert line.startswith(f"rlsys: run failed: RewardScoringError: step 1: reward function {fn} failed on "
                           "64/64 samples (100%); first: sample 0 of rank 0"), line
    assert "RuntimeError: cannot score" in line and "reward.max_error_fraction=0.5" in line
    assert not (tmp_path / "run" / "summary.json").exists()


def test_sigterm_during_save_completes_it_then_a_missing_file_fails_resume_naming_it(tmp_path):
    run_dir, overrides = tmp_path / "run", (*SHORT, "trainer.total_steps=3", "trainer.save_freq=1")
    proc = start_run(run_dir, *overrides, env_extra={"RLSYS_TEST_SLEEP_DURING_SAVE_S": "5"})
    ckpts = run_dir / "checkpoints"
    wait_for(lambda: (ckpts / ".tmp_global_step_1" / "actor").is_dir(), proc)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGTERM)  # the driver only, as a scheduler's kill would
    try:
        proc.wait(timeout=120)
    finally:
        leaked = kill_session(proc)
    log = (run_dir / "driver.log").read_text()
    assert proc.returncode != 0, log[-3000:]
    assert "SIGTERM received: finishing saving checkpoint global_step_1 first" in log
    assert "saving checkpoint global_step_1 done; now handling SIGTERM" in log
    assert sorted(p.name for p in ckpts.iterdir()) == ["global_step_1"]  # complete, no .tmp_ leftover
    assert (ckpts / "global_step_1" / "COMPLETE").exists()
    assert [r["step"] for r in read_metrics(run_dir) if r["step"] > 0] == [1]  # exited after the save
    print(f"\n[sigterm during save] rc={proc.returncode}, processes left after the exit: {len(leaked)}")

    # A file of the saved checkpoint goes missing: its manifest no longer verifies, and an explicit
    # resume fails naming the checkpoint and the file (before any worker reads it).
    missing = ckpts / "global_step_1" / "actor" / "extra_state.pt"
    missing.unlink()
    proc = run_main(run_dir, *overrides, f"trainer.resume={ckpts / 'global_step_1'}")
    assert proc.returncode != 0
    line = last_line(proc.stderr)
    assert f"checkpoint {ckpts / 'global_step_1'} does not verify: actor/extra_state.pt" in line, line
