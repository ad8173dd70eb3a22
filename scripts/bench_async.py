"""Asynchronous RL throughput: `trainer.max_staleness` = 0 (the synchronous baseline), 1 and 2,
the same GRPO workload in split placement, measured in one run of this script.

    python scripts/bench_async.py [--steps 14] [--warmup 4] [--staleness 0,1,2] [-- extra overrides...]

Each setting is one `python -m rlsys.main` run (embedded tiny model and task, CPU/gloo here);
the first `--warmup` steps are dropped. steps/s = measured steps / their summed timing_s/step,
tokens/s = their summed perf/total_num_tokens / the same time. The table also gives the
synchronous run's median generation and training seconds per step, to show the workload keeps
the two comparable (the case where overlapping them pays), and the async runs' median waits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PHASES = ("reward", "old_log_prob", "ref", "adv", "update_actor")
# Generation and training comparable on a 2-core CPU: no KL loss (no reference phase) and the
# rollout's log-probs as the old ones (no old-log-prob phase) leave reward + update, about as
# long as generation, and one optimizer step per batch (actor.ppo_mini_batch_size = the 64
# sequences of a step; the recipe's 32 gives two). Split placement on CPU gives each side a process; here also a core of
# its own (the engine's OpenMP threads bound to core 1 via VLLM_CPU_OMP_THREADS_BIND, the
# trainer's one Ray-default OpenMP thread left the other), the CPU analog of split devices.
WORKLOAD = ("+recipe=grpo", "placement=split", "actor.use_kl_loss=false",
            "algorithm.rollout_correction.use_rollout_log_probs_as_old=true",
            "actor.ppo_mini_batch_size=64", "trainer.test_freq=0", "trainer.val_before_train=false")
ENV = {"VLLM_CPU_OMP_THREADS_BIND": "1"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=14, help="steps per run (trainer.total_steps)")
    p.add_argument("--warmup", type=int, default=4, help="first steps left out of the figures")
    p.add_argument("--staleness", default="0,1,2", help="comma-separated trainer.max_staleness values")
    p.add_argument("--timeout-s", type=int, default=900, help="per run")
    p.add_argument("extra", nargs="*", help="further Hydra overrides for every run")
    return p.parse_args(argv)


def run_trainer(run_dir: Path, overrides: list[str], timeout_s: int) -> list[dict]:
    cmd = [sys.executable, "-m", "rlsys.main", f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", **ENV), capture_output=True,
                          text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def summarize(rows: list[dict], warmup: int) -> dict:
    steps = [r for r in rows if r["step"] > warmup and "timing_s/step" in r]
    if not steps:
        raise ValueError(f"no steps after --warmup {warmup}; raise --steps")
    seconds = sum(r["timing_s/step"] for r in steps)

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in steps)

    return {
        "steps_per_s": len(steps) / seconds,
        "tokens_per_s": sum(r["perf/total_num_tokens"] for r in steps) / seconds,
        "gen_s": median("timing_s/gen"),
        "train_s": statistics.median(sum(r.get(f"timing_s/{p}", 0.0) for p in TRAIN_PHASES) for r in steps),
        "sync_s": median("timing_s/sync_weights"),
        "wait_rollout_s": median("timing_s/wait_for_rollout"),
        "wait_train_s": median("timing_s/wait_for_train"),
        "staleness_mean": statistics.mean(r.get("async/staleness_mean", 0.0) for r in steps),
        "num_steps": len(steps),
    }


def table(results: dict[int, dict]) -> str:
    base = results[0]["steps_per_s"] if 0 in results else None
    lines = ["| max_staleness | steps/s | tokens/s | vs sync | gen s/step | train s/step | sync s | "
             "wait_for_rollout s | wait_for_train s | staleness mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in results.items():
        ratio = f"{r['steps_per_s'] / base:.2f}x" if base else "-"
        gen = f"{r['gen_s']:.3f}" if k == 0 else "(overlapped)"
        wait = (f"{r['wait_rollout_s']:.3f}", f"{r['wait_train_s']:.3f}") if k > 0 else ("-", "-")
        lines.append(f"| {k}{' (sync baseline)' if k == 0 else ''} | {r['steps_per_s']:.2f} | "
                     f"{r['tokens_per_s']:.0f} | {ratio} | {gen} | {r['train_s']:.3f} | {r['sync_s']:.3f} | "
                     f"{wait[0]} | {wait[1]} | {r['staleness_mean']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    values = [int(v) for v in args.staleness.split(",")]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_async_") as tmp:
        for k in values:
            overrides = [*WORKLOAD, f"trainer.total_steps={args.steps}", f"trainer.max_staleness={k}", *args.extra]
            rows = run_trainer(Path(tmp) / f"k{k}", overrides, args.timeout_s)
            results[k] = summarize(rows, args.warmup)
            print(f"max_staleness={k}: {results[k]['steps_per_s']:.2f} steps/s", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.system()}; workload: {' '.join(WORKLOAD)} {' '.join(args.extra)}, env {ENV}; "
          f"{args.steps} steps, first {args.warmup} dropped, {results[values[0]]['num_steps']} measured")
    print(table(results))
    if 0 in results and 1 in results:
        ratio = results[1]["steps_per_s"] / results[0]["steps_per_s"]
        print(f"target: max_staleness=1 >= 1.3x the synchronous steps/s: {ratio:.2f}x "
              f"{'PASS' if ratio >= 1.3 else 'FAIL'}")


if __name__ == "__main__":
    main()
