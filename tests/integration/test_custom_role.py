"""The worked custom-role example (recipes/length_judge.py) runs in both placements and its
output reaches the metrics; a bad role target fails at start naming the key."""

from __future__ import annotations

import math

import pytest

from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("placement", ["colocate", "own_pool"])
def test_judge_role_output_reaches_metrics(tmp_path, placement):
    # rollout.name=hf: this is about the role, not the engine (no vLLM start-up: ~8 s less a run)
    proc = run_main(tmp_path, "+recipe=grpo_judge", f"roles.judge.placement={placement}", "rollout.name=hf",
                    "trainer.total_steps=2", "trainer.test_freq=0", "trainer.val_before_train=false")
    assert proc.returncode == 0
    rows = [r for r in read_metrics(tmp_path) if r["step"] > 0]
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= row["roles/judge/over_length_frac"] <= 1.0
        assert row["roles/judge/extra_score_mean"] <= 0.0 and math.isfinite(row["timing_s/role_judge"])
    # The judge's penalty lowers the reward relative to the raw score whenever a response ran long.
    for row in rows:
        if row["roles/judge/over_length_frac"] > 0:
            assert row["critic/score/mean"] < 1.0


def test_unimportable_role_fails_at_start(tmp_path):
    proc = run_main(tmp_path, "+recipe=grpo", "+roles.judge={_target_:nowhere.Nothing}", "trainer.total_steps=1")
    assert proc.returncode != 0
    assert "roles.judge._target_='nowhere.Nothing' cannot be imported" in proc.stderr
