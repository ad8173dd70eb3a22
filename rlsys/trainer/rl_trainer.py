"""The driver loop (single controller): one step is a flat sequence of named, timed phases.

generate -> reward -> balance -> old log-probs -> reference log-probs -> values -> advantages
-> update critic -> update actor -> sync weights -> validate -> log
Algorithm choices come in as functions picked from config (`rlsys.algorithms` registries).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from rlsys.algorithms import get_kl_controller, rollout_logprob_gap, scores_to_token_level
from rlsys.config.batch_sizes import BatchShapes
from rlsys.protocol import DataProto
from rlsys.rollout.agent.metrics import multi_turn_metrics
from rlsys.trainer.advantage import compute_advantage_phase
from rlsys.trainer.metrics import MetricsWriter, compute_data_metrics, mean_of_rank_metrics
from rlsys.trainer.placement import RoleGroups
from rlsys.trainer.plots import write_reward_curve
from rlsys.trainer.reward_errors import check_reward_errors
from rlsys.trainer.timing import PhaseTimer
from rlsys.workers.actor import NonFiniteLossError


def compiles_trainer_code(config) -> bool:
    """Whether the actor and reference run torch.compile'd code (`actor.use_torch_compile`;
    null = on CUDA, with `trainer.device=auto` resolved as the launcher does)."""
    import torch

    from rlsys.workers.model_utils import use_torch_compile

    device = config.trainer.device
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return use_torch_compile(config.actor.use_torch_compile, torch.device("cuda" if cuda else "cpu"))


class RLTrainer:
    def __init__(self, config, roles: RoleGroups, train_loader, val_batch: DataProto, shapes: BatchShapes,
                 run_dir: Path, weight_sync, checkpoints=None):
        self.config, self.roles, self.shapes = config, roles, shapes
        self.train_loader, self.val_batch = train_loader, val_batch
        self.run_dir = run_dir
        self.weight_sync = weight_sync
        self.checkpoints = checkpoints  # rlsys.trainer.checkpoint.CheckpointManager or None
        self.writer = MetricsWriter(run_dir, list(config.trainer.logger))
        kl = config.algorithm.kl_ctrl
        self.kl_ctrl = get_kl_controller(kl.type, kl_coef=kl.kl_coef, target_kl=kl.target_kl, horizon=kl.horizon)
        self.val_history: list[tuple[int, float]] = []
        self.val_metrics: dict[str, float] = {}  # the last validation's multi-turn metrics, logged with val/score
        self.side_calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlsys-side-call")
        # reference log-probs beside the old log-probs (start_ref_log_probs says when not)
        self.ref_beside_old = shapes.num_ranks == 1 and not compiles_trainer_code(config)

    # ---- phases -------------------------------------------------------------------------
    def generate(self, prompts: DataProto, validate: bool, step: int = 0) -> DataProto:
        prompts.meta_info["validate"] = validate
        prompts.meta_info["seed"] = self.config.trainer.seed * 7919 + step
        gen = self.roles.rollout.generate_sequences(prompts)
        n = self.config.rollout.val_n if validate else self.config.rollout.n
        return prompts.repeat(repeat_times=n, interleave=True).union(gen)

    def validate(self, step: int) -> float:
        batch = self.generate(self.val_batch.select(deepcopy=True), validate=True)
        scores = self.roles.reward.compute_score(batch).batch["scores"]
        score = float(scores.mean())
        self.val_history.append((step, score))
        self.val_metrics = {f"val/{k}": v for k, v in multi_turn_metrics(batch).items()}  # {}: single-turn
        self.write_val_generations(step, batch, scores)
        return score

    def write_val_generations(self, step: int, batch: DataProto, scores) -> None:
        """Every validation's prompts and responses (text and ids) and scores, appended (rlsys.trainer.generations)."""
        from rlsys.trainer.generations import append_val_generations, load_tokenizer
        from rlsys.trainer.launch import resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(self.config))
        append_val_generations(self.run_dir / "val_generations.jsonl", step, batch, scores, tokenizer)

    def log_batch_uids(self, prompts: DataProto) -> None:
        """Which prompts this step trains on (appended), so a resumed run can be checked against a straight one."""
        with open(self.run_dir / "batch_uids.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, "uids": [str(u) for u in prompts.non_tensor_batch["uid"]]}) + "\n")

    def run_custom_roles(self, batch: DataProto, timer: PhaseTimer) -> dict:
        """Hook for user roles (`roles.<name>`): each sees the scored rollouts; an `extra_scores`
        (batch,) output is added to the sequence score, `meta_info["metrics"]` is logged."""
        metrics = {}
        for name, group in self.roles.custom.items():
            with timer.phase(f"role_{name}"):
                out = group.process_rollouts(batch)
            if out.batch is not None and "extra_scores" in out.batch.keys():
                extra = scores_to_token_level(out.batch["extra_scores"], batch.batch["response_mask"])
                batch.batch["token_level_scores"] = batch.batch["token_level_scores"] + extra
            metrics.update({f"roles/{name}/{k}": float(v) for k, v in out.meta_info.get("metrics", {}).items()})
        return metrics

    def balance(self, batch: DataProto) -> DataProto:
        """Reorder rows so each training rank's chunk holds about the same number of tokens
        (one rank: unchanged, so a one-rank run trains on the rollout order)."""
        num_ranks = self.shapes.num_ranks
        if num_ranks == 1:
            return batch
        from rlsys.workers.micro_batches import balanced_rank_order, sequence_lengths

        order = balanced_rank_order(sequence_lengths(batch.batch["attention_mask"]), num_ranks, seed=self.step)
        return batch[order.numpy()]

    def old_log_probs(self, batch: DataProto, timer: PhaseTimer) -> tuple[DataProto, dict]:
        """The trainer's log-probs of the sampled tokens before the update (phase old_log_prob),
        and their gap to the rollout's; with `use_rollout_log_probs_as_old` the rollout's stand
        in and the phase is skipped."""
        if self.config.algorithm.rollout_correction.use_rollout_log_probs_as_old:
            batch.batch["old_log_probs"] = batch.batch["rollout_log_probs"].clone()
            return batch, {}
        with timer.phase("old_log_prob"):
            batch = batch.union(self.roles.actor.compute_log_prob(batch))
        b = batch.batch
        return batch, rollout_logprob_gap(b["old_log_probs"], b["rollout_log_probs"], b["response_mask"])

    def start_ref_log_probs(self, batch: DataProto, timer: PhaseTimer):
        """Reference log-probs (phase ref) in a driver thread, so that the reference and the
        actor score the same batch at once (two threads of the same worker process; measured
        on the 2-core CPU: old + ref 0.068 s in turn, 0.047 s together); returns a future of
        the DataProto, or None without a reference. Only with one training rank, where the
        reference is a plain module: with several, both roles' FSDP2 collectives would share
        a process group from two threads, in an order the ranks need not agree on. Not with
        torch.compile either: dynamo's tracing flag is process-wide, and a thread that enters
        a compiled function while the other compiles fails ("FX to symbolically trace a
        dynamo-optimized function"; met on the H200)."""
        if self.roles.reference is None:
            return None
        if not self.ref_beside_old:
            done: Future = Future()
            with timer.phase("ref"):
                done.set_result(self.roles.reference.compute_ref_log_prob(batch))
            return done
        inputs = batch.select(batch_keys=["input_ids", "attention_mask", "position_ids", "responses"],
                              non_tensor_batch_keys=[], meta_info_keys=[])

        def call() -> DataProto:  # `inputs` is its own DataProto: the main thread may add keys to `batch`
            with timer.phase("ref"):
                return self.roles.reference.compute_ref_log_prob(inputs)

        return self.side_calls.submit(call)

    def update_actor(self, batch: DataProto) -> dict:
        if self.step in self.config.trainer.profile_steps:  # the actor profiles this update
            root = self.config.trainer.profile_dir or str(self.run_dir / "profile")
            batch.meta_info["profile_path"] = str(Path(root) / f"update_step{self.step}_rank{{rank}}.txt")
        try:
            return mean_of_rank_metrics(self.roles.actor.update_actor(batch))
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"training step {self.step}: {exc}") from exc

    # ---- loop ---------------------------------------------------------------------------
    def step_once(self) -> dict:
        timer = PhaseTimer()
        with timer.phase("step"):
            prompts = self.train_loader.next_batch()
            self.log_batch_uids(prompts)
            time.sleep(float(os.environ.get("RLSYS_TEST_STEP_SLEEP_S", "0")))  # test-only: widen the step for kill tests
            with timer.phase("gen"):
                batch = self.generate(prompts, validate=False, step=self.step)
            batch, metrics = self.learn(batch, timer)
            with timer.phase("sync_weights"):
                metrics.update(self.weight_sync.sync())
        return self.step_metrics(batch, metrics, timer)

    def learn(self, batch: DataProto, timer: PhaseTimer) -> tuple[DataProto, dict]:
        """Every phase from reward to the actor update on one generated batch (shared by the
        synchronous loop here and the asynchronous one in rlsys/trainer/async_trainer.py)."""
        cfg, roles = self.config, self.roles
        with timer.phase("reward"):
            batch = batch.union(roles.reward.compute_score(batch))
            check_reward_errors(batch, cfg.reward, self.step)  # too many failed samples stop the run
        role_metrics = self.run_custom_roles(batch, timer)
        batch = self.balance(batch)
        ref_call = self.start_ref_log_probs(batch, timer)  # runs beside the old log-probs
        batch, gap_metrics = self.old_log_probs(batch, timer)
        role_metrics.update(gap_metrics)
        if ref_call is not None:
            batch = batch.union(ref_call.result())
        if roles.critic is not None:
            with timer.phase("values"):
                batch = batch.union(roles.critic.compute_values(batch))
        with timer.phase("adv"):
            batch, metrics = compute_advantage_phase(batch, cfg.algorithm, self.kl_ctrl)
        metrics.update(role_metrics)
        if roles.critic is not None:
            with timer.phase("update_critic"):
                metrics.update(mean_of_rank_metrics(roles.critic.update_critic(batch)))
        with timer.phase("update_actor"):
            metrics.update(self.update_actor(batch))
        if cfg.algorithm.use_kl_in_reward and "actor/reward_kl_penalty" in metrics:
            self.kl_ctrl.update(metrics["actor/reward_kl_penalty"], n_steps=self.shapes.prompts_per_step)
        return batch, metrics

    def step_metrics(self, batch: DataProto, metrics: dict, timer: PhaseTimer) -> dict:
        """Data, timing and throughput metrics of a finished step."""
        roles = self.roles
        metrics.update(compute_data_metrics(batch, use_critic=roles.critic is not None))
        metrics.update(timer.metrics())
        num_tokens = int(batch.batch["attention_mask"].sum())
        metrics["perf/total_num_tokens"] = num_tokens
        metrics["perf/throughput"] = num_tokens / timer.seconds["step"]
        return metrics

    def fit(self) -> dict:
        cfg = self.config.trainer
        start = time.time()
        start_step = self.checkpoints.resume() if self.checkpoints else 0
        if cfg.val_before_train and start_step == 0:
            score = self.validate(0)
            self.writer.log(0, {"val/score": score, **self.val_metrics})
        bar = tqdm(range(start_step + 1, cfg.total_steps + 1), desc="rlsys", dynamic_ncols=True)
        for self.step in bar:
            metrics = self.step_once()
            if cfg.test_freq > 0 and (self.step % cfg.test_freq == 0 or self.step == cfg.total_steps):
                with PhaseTimer().phase("validate"):
                    metrics["val/score"] = self.validate(self.step)
                metrics.update(self.val_metrics)
            self.writer.log(self.step, metrics)
            if self.checkpoints and self.checkpoints.should_save(self.step):
                self.checkpoints.save(self.step)
                write_reward_curve(self.run_dir)
            bar.set_postfix(score=f"{metrics['critic/score/mean']:.3f}",
                            val=f"{self.val_history[-1][1]:.3f}" if self.val_history else "-",
                            step_s=f"{metrics['timing_s/step']:.1f}")
        self.writer.close()
        self.side_calls.shutdown(wait=False)
        write_reward_curve(self.run_dir)
        return self.write_summary(time.time() - start)

    def write_summary(self, wall_seconds: float) -> dict:
        summary = {
            "val_score_initial": self.val_history[0][1] if self.val_history else None,
            "val_score_final": self.val_history[-1][1] if self.val_history else None,
            "val_history": self.val_history,
            "steps": self.config.trainer.total_steps,
            "wall_seconds": wall_seconds,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
