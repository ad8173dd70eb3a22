"""The asynchronous driver loop (`trainer.max_staleness=k >= 1`, `placement=split`): the rollout
group generates the next batch while the actor trains on this one.

One step t (the actor at version t - 1, rlsys/trainer/staleness.py):
wait for rollout (batch t) -> sync weights (only when the next batch would be more than k
versions old) -> launch generation of batch t + 1 -> reward ... update actor (RLTrainer.learn,
the same phases as the synchronous loop) -> log.
One generation is in flight at a time, so a weight sync never tears one: the driver syncs only
after collecting the generation it waited for. Validation waits for the in-flight generation
too and syncs the newest weights first, so it scores the same weights as the synchronous loop.
Checkpoints: the in-flight generation is not saved; the saved dataloader position is the one
before its prompts, so a resumed run regenerates that batch with the restored weights.

    python -m rlsys.main +recipe=grpo placement=split trainer.max_staleness=1
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from rlsys.protocol import DataProto
from rlsys.rollout.worker import collect_from_engines
from rlsys.trainer.rl_trainer import RLTrainer
from rlsys.trainer.staleness import rollout_idle_s, staleness_metrics, sync_needed
from rlsys.trainer.timing import PhaseTimer

DEFAULT_ASYNC_TIS_CAP = 2.0


def apply_async_defaults(config) -> None:
    """With max_staleness >= 1 the rollout's log-probs are the behaviour policy; truncated IS
    (algorithm.rollout_correction.tis_cap) is on by default then. Call before the workers start."""
    correction = config.algorithm.rollout_correction
    if config.trainer.max_staleness > 0 and correction.tis_cap is None:
        correction.tis_cap = DEFAULT_ASYNC_TIS_CAP
        print(f"rlsys: trainer.max_staleness={config.trainer.max_staleness}: "
              f"algorithm.rollout_correction.tis_cap={DEFAULT_ASYNC_TIS_CAP} (truncated IS on by default)", flush=True)


class LookaheadLoader:
    """Wraps the prompt loader so a checkpoint saves the position before prompts that were
    drawn for a generation still in flight (they are drawn again on resume)."""

    def __init__(self, loader):
        self.loader = loader
        self.state_before_untrained: Optional[dict] = None

    def next_batch(self) -> DataProto:
        self.state_before_untrained = self.loader.state_dict()
        return self.loader.next_batch()

    def mark_trained(self) -> None:
        self.state_before_untrained = None

    def state_dict(self) -> dict:
        return dict(self.state_before_untrained or self.loader.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
        self.state_before_untrained = None


@dataclass
class InFlight:
    """A generation launched for `step`: its prompts, one Ray ref per rollout rank, the engines'
    weight version, and the collected batch once waited for."""

    step: int
    prompts: DataProto
    refs: list
    weight_version: int
    batch: Optional[DataProto] = None
    end_s: float = 0.0


class AsyncRLTrainer(RLTrainer):
    def __init__(self, config, roles, train_loader, val_batch, shapes, run_dir, weight_sync, checkpoints=None):
        if config.trainer.max_staleness < 1:
            raise ValueError(f"trainer.max_staleness={config.trainer.max_staleness}: AsyncRLTrainer needs >= 1 "
                             "(0 is the synchronous RLTrainer)")
        loader = LookaheadLoader(train_loader)
        super().__init__(config, roles, loader, val_batch, shapes, run_dir, weight_sync, checkpoints)
        if checkpoints is not None:
            checkpoints.train_loader = loader
        self.pending: Optional[InFlight] = None
        self.rollout_version = 0  # the weight version the engines hold
        self.step = 0

    # ---- rollout in flight ------------------------------------------------------------
    def launch_generation(self, step: int) -> None:
        """Draw the prompts of `step` and start generating them with the engines' weights."""
        prompts = self.train_loader.next_batch()
        prompts.meta_info["validate"] = False
        prompts.meta_info["seed"] = self.config.trainer.seed * 7919 + step  # as RLTrainer.generate
        refs = self.roles.rollout.generate_sequences_async(prompts)
        self.pending = InFlight(step, prompts, refs, self.rollout_version)
        self.kill_rollout_for_test(step)

    def collect_generation(self) -> InFlight:
        """Wait (bounded by trainer.worker_timeout_s, naming the rank that did not answer) for
        the in-flight generation and tag every sample with its weight version."""
        job = self.pending
        if job.batch is None:
            wg = self.roles.rollout
            outputs = wg.wait_refs(job.refs, "generate_sequences_async", self.config.trainer.worker_timeout_s)
            gen = collect_from_engines(wg, outputs)
            job.end_s = float(gen.meta_info.pop("rlsys_generate_end_s", time.time()))
            batch = job.prompts.repeat(repeat_times=self.config.rollout.n, interleave=True).union(gen)
            batch.non_tensor_batch["rollout_weight_version"] = np.full(len(batch), job.weight_version, dtype=np.int64)
            job.batch = batch
        return job

    def sync_to_actor(self, version: int, timer: PhaseTimer, metrics: dict) -> None:
        """Send the actor's weights (version `version`) to the idle engines."""
        with timer.phase("sync_weights"):
            metrics.update(self.weight_sync.sync())
        self.rollout_version = version

    def kill_rollout_for_test(self, step: int) -> None:
        """Test-only (RLSYS_TEST_KILL_ROLLOUT_AT_STEP=N): SIGKILL the process of rollout rank 0
        right after launching step N's generation, for the fault test."""
        if os.environ.get("RLSYS_TEST_KILL_ROLLOUT_AT_STEP") != str(step):
            return
        import ray

        pid = ray.get(self.roles.rollout.workers[0].__ray_call__.remote(lambda _worker: os.getpid()), timeout=60)
        print(f"rlsys: test: SIGKILL rollout rank 0 (pid {pid}) during the generation of step {step}", flush=True)
        os.kill(pid, signal.SIGKILL)

    # ---- loop ---------------------------------------------------------------------------
    def step_once(self) -> dict:
        timer, k, metrics = PhaseTimer(), self.config.trainer.max_staleness, {}
        with timer.phase("step"):
            if self.pending is None:  # first step of a run (or of a resumed one)
                self.rollout_version = self.step - 1  # resume() / start: engines hold the actor's weights
                self.launch_generation(self.step)
            with timer.phase("wait_for_rollout"):
                job = self.collect_generation()
            assert job.step == self.step, (job.step, self.step)
            self.train_loader.mark_trained()
            self.log_batch_uids(job.prompts)
            time.sleep(float(os.environ.get("RLSYS_TEST_STEP_SLEEP_S", "0")))  # test-only: widen the step for kill tests
            if sync_needed(self.rollout_version, self.step, k):
                self.sync_to_actor(self.step - 1, timer, metrics)
            self.pending = None
            if self.step < self.config.trainer.total_steps:
                self.launch_generation(self.step + 1)
            idle_s = rollout_idle_s(job.end_s, time.time())
            batch, learn_metrics = self.learn(job.batch, timer)
            metrics.update(learn_metrics)
        metrics.update(staleness_metrics(self.step, batch.non_tensor_batch["rollout_weight_version"]))
        metrics = self.step_metrics(batch, metrics, timer)
        metrics["timing_s/wait_for_train"] = idle_s
        return metrics

    def validate(self, step: int) -> float:
        """Validation scores the newest weights, as in the synchronous loop: wait for the
        generation in flight (kept for the next step), sync the actor's weights, generate."""
        if self.pending is not None:
            self.collect_generation()
        if self.rollout_version < step:
            self.sync_to_actor(step, PhaseTimer(), {})
        return super().validate(step)
