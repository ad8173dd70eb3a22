"""Staleness bookkeeping of the asynchronous loop (rlsys/trainer/staleness.py, async_trainer.py)
without Ray: the sync schedule keeps every trained batch within trainer.max_staleness, the
checkpointed loader position is the one before in-flight prompts, and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlsys.config import schema
from rlsys.config.checks import check_config
from rlsys.trainer.async_trainer import LookaheadLoader, apply_async_defaults
from rlsys.trainer.staleness import rollout_idle_s, staleness, staleness_metrics, sync_needed


def simulate(max_staleness: int, total_steps: int) -> tuple[list[int], list[int]]:
    """The async loop's version bookkeeping: (staleness of each step's batch, steps that synced)."""
    rollout_version, batch_version, stale, synced = 0, 0, [], []
    for step in range(1, total_steps + 1):
        stale.append(int(staleness(step, np.array([batch_version]))[0]))
        if sync_needed(rollout_version, step, max_staleness):
            rollout_version = step - 1
            synced.append(step)
        batch_version = rollout_version  # the next batch is generated now
    return stale, synced


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sync_schedule_bounds_staleness_by_k_and_syncs_every_kth_step(k):
    stale, synced = simulate(k, 30)
    assert stale[0] == 0 and max(stale) == k and min(stale[1:]) >= 1
    assert all(s <= k for s in stale)
    assert np.diff(synced).tolist() == [k] * (len(synced) - 1)  # lazy: one sync per k steps


def test_one_step_off_is_exactly_one_version_old_after_the_first_step():
    stale, synced = simulate(1, 6)
    assert stale == [0, 1, 1, 1, 1, 1] and synced == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="trainer.max_staleness=0"):
        sync_needed(0, 1, 0)


def test_staleness_metrics_and_rollout_idle():
    m = staleness_metrics(5, np.array([3, 3, 4, 4]))
    assert m["async/actor_version"] == 4 and m["async/staleness_max"] == 1 and m["async/staleness_mean"] == 0.5
    assert (m["async/rollout_weight_version_min"], m["async/rollout_weight_version_max"]) == (3, 4)
    assert rollout_idle_s(10.0, 12.5) == 2.5 and rollout_idle_s(10.0, 9.0) == 0.0


class CountingLoader:
    def __init__(self):
        self.position = 0

    def next_batch(self):
        self.position += 1
        return self.position

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def test_lookahead_loader_saves_the_position_before_prompts_still_in_flight():
    loader = LookaheadLoader(CountingLoader())
    assert loader.next_batch() == 1
    loader.mark_trained()
    assert loader.next_batch() == 2  # launched, not yet trained: a checkpoint now redraws batch 2
    assert loader.state_dict() == {"position": 1}
    loader.load_state_dict(loader.state_dict())
    assert loader.next_batch() == 2
    loader.mark_trained()
    assert loader.state_dict() == {"position": 2}


def test_async_needs_split_placement_and_turns_truncated_is_on():
    config = schema.RLConfig()
    config.trainer.max_staleness = 1
    with pytest.raises(ValueError, match=r"trainer.max_staleness=1 .* set placement=split"):
        check_config(config, cuda_available=False)
    config.placement = "split"
    check_config(config, cuda_available=False)
    structured = OmegaConf.structured(config)
    apply_async_defaults(structured)
    assert structured.algorithm.rollout_correction.tis_cap == 2.0
    structured.algorithm.rollout_correction.tis_cap = 5.0
    apply_async_defaults(structured)  # a cap the user set is kept
    assert structured.algorithm.rollout_correction.tis_cap == 5.0
