"""GRPO step benchmark: phase breakdown, tokens/s, padding, peak memory and update MFU of real steps.

Runs rlsys's own trainer (`python -m rlsys.main +recipe=grpo ...`, a subprocess with its own
`hydra.run.dir`) for a few steps per configuration, reads its `metrics.jsonl` (one JSON per
step) and prints one table row per configuration: median phase times (`timing_s/*`; the
first step is skipped as warm-up when there are >= 3), tokens/s (`perf/total_num_tokens` /
step time), the mean response length reached, `perf/padding_ratio`,
`perf/max_memory_allocated_gb` (CUDA) and the update phase's MFU =
6 x N x update tokens / `timing_s/update_actor` / the GPU's dense bf16 peak, with update
tokens = `perf/update_num_tokens` (else `perf/total_num_tokens` x actor.ppo_epochs) and N the
parameters that take part in matmuls (from the model directory's safetensors; an untied input
embedding is a lookup and is left out). Attention's quadratic FLOPs are not counted. Metrics
a run does not report print as n/a. The baseline is measured in the same run: the `hf`
engine row when `--engines` has it (CPU default), else the first row; `vs base` is its
median step time over the row's.

Models: on CPU by default the embedded warmed-up model (`builtin:tiny-arith`, which stops on
its own). With `--shape NAME` (rlsys.models.shapes) a random-weight model of that shape is
built (bf16, context >= prompt + response length) and its EOS row biased
(rlsys.models.stopping) so that the mean length of the per-sequence geometric mixture,
truncated at --max-response-length, is --mean-response-length: lengths vary with a long tail. The directory is cached
under --work-dir, so "before" and "after" runs (`--rlsys-root OTHER_CHECKOUT`: the trainer
runs from there) use the same weights.

Rows: `--engines vllm,hf` gives one row per engine; `--row "label:key=v,key=v"` (repeatable)
gives one row per label and engine with those extra Hydra overrides; `--override KEY=VALUE`
applies to every row.

Run (CPU, embedded model, vLLM vs HF):
    flock /tmp/cpu.lock python scripts/bench_train_step.py --device cpu --prompts 16 --samples 4 --steps 6
Run (CPU, random tiny shape with geometric lengths):
    flock /tmp/cpu.lock python scripts/bench_train_step.py --device cpu --shape tiny \
        --max-response-length 64 --mean-response-length 20 --steps 3
Run (GPU acceptance, 1x H200: 1.5B shape, 64 x 8, <= 1024 tokens, mean ~300, 16k-token micro-batches):
    python scripts/bench_train_step.py --device cuda --shape qwen2.5-1.5b --prompts 64 --samples 8 \
        --max-response-length 1024 --mean-response-length 300 --steps 4 \
        --row "dynamic:actor.max_tokens_per_micro_batch=16384" --out results.json
  (for a checkout without token-budget micro-batches, add `--rlsys-root OLD --row "fixed:"`.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("gen", "reward", "old_log_prob", "ref", "update_actor", "sync_weights", "step")
# Dense bf16 peak FLOP/s by GPU name (no sparsity); matched in order on torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
                   ("A100", 312e12))
BUILTIN = "builtin:tiny-arith"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--shape", default=None, help="a shape of rlsys.models.shapes (random weights, EOS-biased); "
                   f"default: {BUILTIN}")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-prompt-length", type=int, default=16)
    p.add_argument("--max-response-length", type=int, default=None,
                   help=f"default: 1024 with --shape, 8 (the trainer's default) with {BUILTIN}")
    p.add_argument("--mean-response-length", type=float, default=300.0,
                   help="with --shape: the EOS bias's fitted mean response length")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="steps left out of the medians (when at least 2 remain): the first compiles; on CUDA, "
                        "torch.compile also recompiles in the next steps as new micro-batch sizes appear")
    p.add_argument("--engines", default=None, help="comma-separated rollout.name values (cpu default: vllm,hf; "
                   "cuda default: vllm)")
    p.add_argument("--row", action="append", default=[], help='"label:k=v,k=v" extra overrides of one row')
    p.add_argument("--override", action="append", default=[], help="KEY=VALUE Hydra override for every row")
    p.add_argument("--rlsys-root", type=Path, default=Path(__file__).resolve().parents[1],
                   help="checkout whose trainer runs (cwd and PYTHONPATH of the subprocess)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/rlsys_bench_train_step"))
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the GPU (default: by name)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per trainer run")
    p.add_argument("--out", type=Path, default=None, help="also write rows and per-step metrics as JSON")
    args = p.parse_args(argv)
    if args.max_response_length is None:
        args.max_response_length = 8 if args.shape is None else 1024
    engines = args.engines or ("vllm,hf" if args.device == "cpu" else "vllm")
    args.engine_list = [e.strip() for e in engines.split(",") if e.strip()]
    args.rows = [parse_row(r, p) for r in args.row] or [("default", [])]
    for o in args.override:
        if "=" not in o:
            p.error(f"--override {o!r}: expected KEY=VALUE")
    return args


def parse_row(text: str, parser) -> tuple[str, list[str]]:
    label, _, rest = text.partition(":")
    overrides = [o.strip() for o in rest.split(",") if o.strip()]
    bad = [o for o in overrides if "=" not in o]
    if not label or bad:
        parser.error(f"--row {text!r}: expected 'label:key=value,key=value'")
    return label, overrides


def machine_name(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor() or "cpu")
    return f"{model}, {os.cpu_count()} cores (CPU)"


def peak_bf16_flops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if args.device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def prepare_model(args) -> str:
    """model.path for the trainer: the builtin name, or a cached EOS-biased random-weight directory."""
    if args.shape is None:
        return BUILTIN
    from rlsys.models.shapes import QWEN2_SHAPES
    from rlsys.models.stopping import BIAS_FILE, bias_eos_in_dir
    from rlsys.models.tiny import build_tiny_model_dir

    if args.shape not in QWEN2_SHAPES:
        raise ValueError(f"--shape {args.shape!r} unknown; choose from {sorted(QWEN2_SHAPES)}")
    positions = args.max_prompt_length + args.max_response_length + 8
    model_dir = args.work_dir / f"{args.shape}-pos{positions}-len{args.mean_response_length:g}-of{args.max_response_length}"
    marker = model_dir / BIAS_FILE
    if marker.exists():
        print(f"model: cached {model_dir} {json.loads(marker.read_text())}", flush=True)
        return str(model_dir)
    shutil.rmtree(model_dir, ignore_errors=True)
    start = time.perf_counter()
    build_tiny_model_dir(model_dir, 0, dtype="bfloat16",
                         **{**QWEN2_SHAPES[args.shape], "max_position_embeddings": positions})
    result = bias_eos_in_dir(model_dir, None, device=args.device, length=min(positions, 256),
                             target_mean_length=args.mean_response_length, max_length=args.max_response_length)
    print(f"model: built {model_dir} in {time.perf_counter() - start:.0f} s; EOS bias {result}", flush=True)
    return str(model_dir)


def resolve_model_dir(model_path: str) -> Path:
    if model_path == BUILTIN:
        from rlsys.models.warmup import ensure_base_model

        return Path(ensure_base_model(seed=0))
    return Path(model_path)


def matmul_params(model_dir: Path) -> tuple[int, int]:
    """(all stored parameters, those in matmuls): safetensors headers only, no tensors loaded."""
    total, embed = 0, 0
    config = json.loads((model_dir / "config.json").read_text())
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
            if name.endswith("embed_tokens.weight"):
                embed = count
    tied = config.get("tie_word_embeddings", False)
    return total, total if tied else total - embed  # tied: the shared matrix is the LM head's matmul


def trainer_overrides(args, model_path: str, engine: str, extra: list[str]) -> list[str]:
    n_seq = args.prompts * args.samples
    o = [f"model.path={model_path}", f"data.train_batch_size={args.prompts}", f"rollout.n={args.samples}",
         f"data.max_prompt_length={args.max_prompt_length}", f"data.max_response_length={args.max_response_length}",
         f"rollout.max_model_len={args.max_prompt_length + args.max_response_length + 8}",
         f"actor.ppo_mini_batch_size={n_seq}", f"trainer.total_steps={args.steps}", "trainer.test_freq=0",
         "trainer.val_before_train=false", "trainer.save_freq=-1", "actor.optim.lr=1e-6",
         f"rollout.name={engine}", f"trainer.device={args.device}"]
    if args.device == "cuda":
        o.append("rollout.gpu_memory_utilization=0.3")
    return o + list(args.override) + list(extra)


def run_trainer(args, run_dir: Path, overrides: list[str]) -> list[dict]:
    """One trainer run; returns its per-step metrics (raises with the log's tail if it fails)."""
    shutil.rmtree(run_dir, ignore_errors=True)  # metrics.jsonl appends; a stale checkpoint would resume
    run_dir.mkdir(parents=True)
    root = args.rlsys_root.resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "rlsys.main", "+recipe=grpo", *overrides, f"hydra.run.dir={run_dir}"]
    log = run_dir.parent / f"{run_dir.name}.log"
    print(f"run: (cd {root} && {' '.join(cmd)}) > {log}", flush=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.timeout_s)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"trainer exited {proc.returncode}; log {log}:\n{tail}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def median_of(steps: list[dict], key: str) -> float | None:
    values = [s[key] for s in steps if key in s]
    return statistics.median(values) if values else None


def profiled_steps(overrides: list[str]) -> set[int]:
    """The steps that `trainer.profile_steps=[...]` among `overrides` profiles."""
    import re

    found = [o.split("=", 1)[1] for o in overrides if o.startswith("trainer.profile_steps=")]
    return {int(n) for value in found for n in re.findall(r"\d+", value)}


def summarise(steps: list[dict], num_matmul_params: int, ppo_epochs: int, peak_flops: float | None,
              skip: set[int] = frozenset(), warmup_steps: int = 1) -> dict:
    """Medians over the measured steps: the first `warmup_steps` are left out when at least 2
    remain, and so are the steps in `skip` (profiled steps run slower)."""
    measured = steps[warmup_steps:] if len(steps) >= warmup_steps + 2 else steps
    measured = [s for s in measured if s.get("step") not in skip] or measured
    row = {f"{phase}_s": median_of(measured, f"timing_s/{phase}") for phase in PHASES}
    tokens_per_s = [s["perf/total_num_tokens"] / s["timing_s/step"] for s in measured
                    if "perf/total_num_tokens" in s and "timing_s/step" in s]
    row["tokens_per_s"] = statistics.median(tokens_per_s) if tokens_per_s else None
    row["response_length_mean"] = median_of(measured, "response_length/mean")
    row["response_length_clip_ratio"] = median_of(measured, "response_length/clip_ratio")
    row["padding_ratio"] = median_of(measured, "perf/padding_ratio")
    row["max_memory_allocated_gb"] = max((s["perf/max_memory_allocated_gb"] for s in steps
                                          if "perf/max_memory_allocated_gb" in s), default=None)
    flops_per_s = []
    for s in measured:
        if "timing_s/update_actor" not in s:
            continue
        tokens = s.get("perf/update_num_tokens", s.get("perf/total_num_tokens", 0) * ppo_epochs)
        flops_per_s.append(6 * num_matmul_params * tokens / s["timing_s/update_actor"])
    row["update_tflops"] = statistics.median(flops_per_s) / 1e12 if flops_per_s else None
    row["update_mfu"] = row["update_tflops"] * 1e12 / peak_flops if flops_per_s and peak_flops else None
    row["num_steps_measured"] = len(measured)
    return row


def fmt(value, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_table(rows: list[dict], baseline: dict, header: str) -> None:
    print(f"\n{header}\n")
    cols = ["config", "engine", "resp len (mean / clip)"] + [f"{p} s" for p in PHASES] + [
        "vs base", "tokens/s", "padding", "peak GB", "update TFLOP/s", "update MFU"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        speed = baseline["step_s"] / r["step_s"] if r["step_s"] and baseline["step_s"] else None
        cells = [r["label"], r["engine"] + (" (base)" if r is baseline else ""),
                 f"{fmt(r['response_length_mean'], '.1f')} / {fmt(r['response_length_clip_ratio'], '.2f')}"]
        cells += [fmt(r[f"{p}_s"]) for p in PHASES]
        cells += [fmt(speed, ".2f", "x"), fmt(r["tokens_per_s"], ".0f"), fmt(r["padding_ratio"], ".3f"),
                  fmt(r["max_memory_allocated_gb"], ".1f"), fmt(r["update_tflops"], ".3g"),
                  fmt(None if r["update_mfu"] is None else 100 * r["update_mfu"], ".3g", "%")]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if r is baseline:
            continue
        slower = [p for p in PHASES if p not in ("gen", "step") and r[f"{p}_s"] and baseline[f"{p}_s"]
                  and r[f"{p}_s"] > baseline[f"{p}_s"]]
        print(f"{r['label']}/{r['engine']}: phases other than gen slower than the baseline: {', '.join(slower) or 'none'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_path = prepare_model(args)
    total_params, num_matmul = matmul_params(resolve_model_dir(model_path))
    peak = peak_bf16_flops(args)
    ppo_epochs = next((int(o.split("=", 1)[1]) for o in reversed(args.override) if o.startswith("actor.ppo_epochs=")), 1)
    results, rows = [], []
    for label, extra in args.rows:
        for engine in args.engine_list:
            overrides = trainer_overrides(args, model_path, engine, extra)
            steps = run_trainer(args, args.work_dir / f"run-{label}-{engine}", overrides)
            epochs = next((int(o.split("=", 1)[1]) for o in reversed(extra) if o.startswith("actor.ppo_epochs=")),
                          ppo_epochs)
            row = {"label": label, "engine": engine, **summarise(steps, num_matmul, epochs, peak, profiled_steps(overrides), args.warmup_steps)}
            rows.append(row)
            results.append({**row, "overrides": overrides, "steps": steps})
            if args.out:  # rewritten after each run, so a killed bench keeps what it measured
                args.out.write_text(json.dumps({"machine": machine_name(args.device), "argv": sys.argv,
                                                "rows": results}, indent=2))
    baseline = next((r for r in rows if r["engine"] == "hf"), rows[0])
    model = args.shape or BUILTIN
    header = (f"{model} ({total_params / 1e6:.2f}M params, {num_matmul / 1e6:.2f}M in matmuls), "
              f"{args.prompts} prompts x {args.samples} samples, max response {args.max_response_length}"
              + (f" (target mean {args.mean_response_length:g})" if args.shape else "")
              + f", {args.steps} steps (median of {rows[0]['num_steps_measured']}), rlsys root {args.rlsys_root}; "
              f"machine: {machine_name(args.device)}; bf16 peak: {fmt(peak and peak / 1e12, '.0f', ' TFLOP/s')}")
    print_table(rows, baseline, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
