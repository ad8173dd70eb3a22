"""Peak memory of response log-probs + entropy with and without the full-vocabulary logits.

Forward and backward of log p(target) and entropy for `--tokens` response positions through
an LM head of Qwen2.5's vocabulary, computed two ways: the plain way (fp32 logits of every
token, `log_softmax`, autograd keeps them) and `rlsys.workers.lm_head.chunked_log_probs`
(one chunk of fp32 logits at a time, recomputed in backward). Each runs in its own process;
CPU reports peak RSS growth, CUDA `max_memory_allocated` above the inputs.

    python scripts/bench_logprob_memory.py --tokens 1024 --hidden 896 --vocab 151936
    python scripts/bench_logprob_memory.py --device cuda --tokens 16384 --hidden 1536 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(method: str, args) -> dict:
    import torch

    from rlsys.workers.lm_head import chunked_log_probs

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g, device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=g, device=device, dtype=dtype) * 0.02).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "plain":
        log_softmax = torch.log_softmax((hidden @ weight.t()).float(), dim=-1)
        log_probs = log_softmax.gather(1, targets[:, None]).squeeze(1)
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    else:
        log_probs, entropy = chunked_log_probs(hidden, weight, targets, 1.0, args.chunk_size, with_entropy=True)
    (log_probs.sum() + 0.01 * entropy.sum()).backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    return {"method": method, "peak_gb": peak / 1e9, "seconds": time.perf_counter() - start,
            "log_prob_sum": float(log_probs.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    rows = []
    for method in ("plain", "chunked"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", method],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    full_logits_gb = args.tokens * args.vocab * 4 / 1e9
    print(f"{args.tokens} tokens x vocab {args.vocab}, hidden {args.hidden}, {args.dtype} on {args.device}; "
          f"chunk {args.chunk_size}; one fp32 logits tensor = {full_logits_gb:.2f} GB")
    print("| method | peak memory (GB) | vs plain | fwd+bwd (s) | sum log p |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['peak_gb']:.2f} | {r['peak_gb'] / rows[0]['peak_gb']:.2f}x | "
              f"{r['seconds']:.2f} | {r['log_prob_sum']:.3f} |")


if __name__ == "__main__":
    main()
