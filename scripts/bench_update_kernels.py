"""Actor update kernels: forward + backward throughput of rlsys's scorer by variant, one device.

Builds a random model of a shape from rlsys.models.shapes, wraps it as the actor does
(`ResponseScorer` under FSDP2 with fp32 masters and a bf16-compute `MixedPrecisionPolicy` on
CUDA), draws RL-like sequences (prompt lengths uniform in [8, --max-prompt], response lengths
geometric with mean --mean-response, truncated at --max-response), packs them into
token-budget micro-batches exactly as the update does, and times --micro-batches
forward+backward passes plus one AdamW step per variant. The loss is a policy-gradient-shaped
token mean of log-probs times random advantages, with the entropy computed as the update does.

Printed per variant: seconds, real tokens/s, TFLOP/s = 6 x N x real tokens / time (N: matmul
parameters, tied head counted once, attention FLOPs not counted), MFU against the GPU's bf16
peak, and the speedup in real tokens/s over the first row (the session-5 settings, measured in
the same run). `--profile` adds torch.profiler's top kernels and device-busy share for the session-6 and new defaults.

    python scripts/bench_update_kernels.py --device cuda --shape qwen2.5-1.5b --profile
    python scripts/bench_update_kernels.py --device cpu --shape tiny --tokens-per-micro 2048
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> settings; the first row is the baseline the speedup column divides by. Each variant
# draws its own batch (new micro-batch widths, as every training step meets).
BASE = dict(mask=False, flash=True, reshard=False, chunk=4096, compile=True, sync=True, tokens=None, fsdp=True,
            attention="sdpa", local_acc=False, keep_logits=False)
NEW = dict(BASE, sync=False, attention="flash", local_acc=True)  # this session's defaults
VARIANTS = {
    "session-5 code: padding mask, SDPA default order, reshard, eager": dict(
        BASE, mask=True, flash=False, reshard=None, chunk=1024, compile=False),
    "session-6 default: no mask, flash-first SDPA, no reshard, torch.compile, chunk 4096": dict(BASE),
    "+ no metric read per micro-batch": dict(BASE, sync=False),
    "+ flash attention forced, outside the compiled graph": dict(BASE, sync=False, attention="flash"),
    "+ cuDNN attention forced, outside the compiled graph": dict(BASE, sync=False, attention="cudnn"),
    "+ flash forced + one-rank local accumulation (new default)": dict(NEW),
    "new default, micro-batches of 2x the tokens": dict(NEW, tokens=2.0),
    "new default + LM-head logits kept for the backward (actor.logprob_keep_logits)": dict(NEW, keep_logits=True),
    "new default without FSDP (plain bf16 module: the sharding's cost)": dict(NEW, fsdp=False, local_acc=False),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--shape", default="qwen2.5-1.5b")
    p.add_argument("--tokens-per-micro", type=int, default=16384)
    p.add_argument("--micro-batches", type=int, default=6)
    p.add_argument("--max-prompt", type=int, default=64)
    p.add_argument("--max-response", type=int, default=1024)
    p.add_argument("--mean-response", type=float, default=300.0)
    p.add_argument("--variants", default=None, help="comma-separated substrings of variant names")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return p.parse_args(argv)


def draw_batch(args, vocab: int, generator):
    """Rollout-layout tensors: [left-padded prompt | right-padded response] rows."""
    import torch

    rows = []
    total = 0
    while total < args.tokens_per_micro * (args.micro_batches + 1) * 1.3:
        p_len = int(torch.randint(8, args.max_prompt + 1, (1,), generator=generator))
        u = float(torch.rand(1, generator=generator))
        r_len = min(args.max_response, 1 + int(-args.mean_response * torch.log1p(torch.tensor(-u))))
        rows.append((p_len, r_len))
        total += p_len + r_len
    P, R = args.max_prompt, args.max_response
    ids = torch.randint(0, vocab, (len(rows), P + R), generator=generator)
    mask = torch.zeros(len(rows), P + R, dtype=torch.long)
    for i, (p_len, r_len) in enumerate(rows):
        mask[i, P - p_len:P] = 1
        mask[i, P:P + r_len] = 1
    return ids * mask, mask, R


def build_scorer(args, settings, device):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlsys.models.shapes import qwen2_shape
    from rlsys.workers import model_utils
    from rlsys.workers.lm_head import ResponseScorer

    config = Qwen2Config(**qwen2_shape(args.shape, args.max_prompt + args.max_response + 8))
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(device=device, dtype=torch.float32)
    if args.gradient_checkpointing:
        model_utils.enable_gradient_checkpointing(model)
    model.train()
    from rlsys.workers.attention import use_attention_backend

    use_attention_backend(model, settings["attention"])
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    if not settings["fsdp"]:
        model.to(compute)
    if settings["compile"]:
        model_utils.compile_decoder_layers(model)
    scorer = ResponseScorer(model, settings["chunk"], mask_padding=settings["mask"], compiled=settings["compile"],
                            flash_first=settings["flash"], keep_logits=settings.get("keep_logits", False))
    if settings["fsdp"]:
        scorer = model_utils.shard_model(model, scorer, model_utils.mixed_precision(torch.float32, compute),
                                         reshard_after_forward=settings["reshard"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    return model, scorer, optimizer


def run_variant(args, settings, batch, device, profile=False):
    import torch

    from rlsys.workers import model_utils
    from rlsys.workers.micro_batches import micro_partitions, pack_micro_batch

    ids, mask, response_length = batch
    model, scorer, optimizer = build_scorer(args, settings, device)
    tokens = int(args.tokens_per_micro * (settings["tokens"] or 1.0))
    micro_batches = max(1, round(args.micro_batches * args.tokens_per_micro / tokens))
    parts = micro_partitions(mask, 0, tokens)[: micro_batches + 1]
    micro = [(ids[r].to(device), mask[r].to(device)) for r in parts]
    advantages = [torch.randn(len(r), response_length, device=device) for r in parts]

    def step(mbs):
        real = 0
        for index, ((m_ids, m_mask), adv) in enumerate(mbs):
            if settings["local_acc"]:
                model_utils.set_micro_batch_sync(scorer, last=index == len(mbs) - 1)
            packed = pack_micro_batch(m_ids, m_mask, response_length)
            log_probs, entropy = scorer(packed, 1.0, True)
            valid = packed.response_valid.float()
            a = adv[:, : valid.shape[1]]
            loss = -(log_probs * a * valid).sum() / valid.sum() - 0.0 * (entropy * valid).sum() / valid.sum()
            loss.backward()
            if settings["sync"]:
                loss.detach().item()  # the session-6 update loop read its metrics every micro-batch
            real += int(m_mask.sum())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return real

    start = time.perf_counter()
    step(list(zip(micro[:1], advantages[:1])))  # warm-up: allocator, kernels, compile, optimizer state
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timed = list(zip(micro[1:], advantages[1:]))
    start = time.perf_counter()
    real = step(timed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    table = None
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        profile_start = time.perf_counter()
        with torch_profile(activities=activities) as prof:
            step(timed[:2])
            if device.type == "cuda":
                torch.cuda.synchronize()
        from rlsys.workers.profiling import profile_summary

        table = profile_summary(prof, device, time.perf_counter() - profile_start)
    computed = sum(int(m.shape[0]) * int(pack_micro_batch(i, m, response_length).input_ids.shape[1])
                   for (i, m) in micro[1:])
    del model, scorer, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dict(seconds=seconds, real=real, computed=computed, peak=peak, warmup=warmup_s), table


def main(argv=None) -> int:
    import torch

    from rlsys.models.shapes import num_parameters, qwen2_shape
    from rlsys.workers import model_utils

    args = parse_args(argv)
    device = model_utils.resolve_device(args.device)
    model_utils.init_distributed(device)
    shape = qwen2_shape(args.shape)
    n_params = num_parameters(shape)
    if not shape["tie_word_embeddings"]:
        n_params -= shape["vocab_size"] * shape["hidden_size"]  # the input embedding is a lookup
    peak = None
    if device.type == "cuda":
        from scripts.bench_train_step import PEAK_BF16_FLOPS

        name = torch.cuda.get_device_name(0)
        peak = next((f for k, f in PEAK_BF16_FLOPS if k in name), None)
    first = next(iter(VARIANTS))  # the baseline row always runs
    chosen = {k: v for k, v in VARIANTS.items()
              if (device.type == "cuda" or v["attention"] in ("sdpa", "flash", "math"))  # CPU: no cuDNN
              and (k == first or args.variants is None or any(s in k for s in args.variants.split(",")))}
    rows, tables = [], {}
    for index, (name, settings) in enumerate(chosen.items()):
        batch = draw_batch(args, shape["vocab_size"], torch.Generator().manual_seed(index))
        result, table = run_variant(args, settings, batch, device,
                                    profile=args.profile and settings in (BASE, NEW))
        rows.append((name, result))
        if table:
            tables[name] = table
        print(f"{name}: {result['seconds']:.3f} s", flush=True)
    machine = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"\n{machine}, shape {args.shape} ({n_params / 1e9:.2f}B matmul params), {args.micro_batches} "
          f"micro-batches of <= {args.tokens_per_micro} tokens, responses geometric mean {args.mean_response:g} "
          f"<= {args.max_response}, gradient checkpointing {args.gradient_checkpointing}\n")
    print("| variant | warm-up s | s | real tokens/s | padding | TFLOP/s | MFU | peak GB | vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0][1]["real"] / rows[0][1]["seconds"]
    for name, r in rows:
        tflops = 6 * n_params * r["real"] / r["seconds"] / 1e12
        mfu = f"{tflops * 1e12 / peak:.1%}" if peak else "n/a"
        print(f"| {name} | {r['warmup']:.1f} | {r['seconds']:.3f} | {r['real'] / r['seconds']:.0f} | {r['computed'] / r['real']:.3f} | "
              f"{tflops:.1f} | {mfu} | {r['peak']:.1f} | {r['real'] / r['seconds'] / base:.2f}x |")
    if args.json:
        import json

        args.json.write_text(json.dumps([dict(name=n, settings=VARIANTS[n], **r) for n, r in rows], indent=1))
    for name, table in tables.items():
        print(f"\nprofile: {name}\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
