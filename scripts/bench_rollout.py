"""Rollout role throughput next to a bare `vllm.LLM.generate` on the same prompts, same run.

    python scripts/bench_rollout.py [--model PATH] [--num-prompts 256] [--max-tokens 8] [--repeats 3]

The rollout role runs as a one-rank RayWorkerGroup (the framework path: DataProto in,
dispatch, vLLM, padding, DataProto out); the baseline is `vllm.LLM.generate` in this process
with the same sampling settings. Prints a markdown table; target: role >= 95% of bare tokens/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def sampled_tokens(batch) -> int:
    return int(batch.batch["response_mask"].sum())


def bench_role(config, model_path: str, prompts, repeats: int) -> list[float]:
    import ray

    from rlsys.rollout.worker import RolloutWorker
    from rlsys.single_controller import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    pool = RayResourcePool([1], use_gpu=config.trainer.device == "cuda", name_prefix="bench_rollout")
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(RolloutWorker, config, model_path), name_prefix="bench_rollout")
    wg.init_engine()
    wg.generate_sequences(prompts[:8])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = wg.generate_sequences(prompts)
        rates.append(sampled_tokens(out) / (time.perf_counter() - start))
    wg.shutdown()
    ray.shutdown()
    return rates


def bench_bare(config, model_path: str, prompt_ids, repeats: int) -> list[float]:
    from vllm import LLM, SamplingParams

    r = config.rollout
    llm = LLM(model=model_path, dtype="float32" if config.trainer.device == "cpu" else "bfloat16",
              max_model_len=r.max_model_len, enforce_eager=True, seed=0)
    params = SamplingParams(n=r.n, temperature=r.temperature, max_tokens=config.data.max_response_length, logprobs=0)
    requests = [{"prompt_token_ids": p} for p in prompt_ids]
    llm.generate(requests[:8], params, use_tqdm=False)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = llm.generate(requests, params, use_tqdm=False)
        tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        rates.append(tokens / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF model dir (default: the embedded tiny model)")
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch
    from transformers import AutoTokenizer

    from rlsys.config.schema import RLConfig
    from rlsys.data.prompts import tokenize_prompts
    from rlsys.models.warmup import ensure_base_model
    from rlsys.tasks import make_arithmetic_dataset

    model_path = args.model or str(ensure_base_model(seed=0))
    config = RLConfig()
    config.trainer.device = "cuda" if torch.cuda.is_available() else "cpu"
    config.data.max_response_length = args.max_tokens
    config.rollout.temperature = 1.0
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = make_arithmetic_dataset(args.num_prompts, seed=0, split="train")
    prompts = tokenize_prompts(rows, tokenizer, config.data.max_prompt_length)
    prompt_ids = [row[m.bool()].tolist() for row, m in zip(prompts.batch["prompt_ids"], prompts.batch["prompt_mask"])]
    role = bench_role(config, model_path, prompts, args.repeats)
    bare = bench_bare(config, model_path, prompt_ids, args.repeats)
    role_med, bare_med = statistics.median(role), statistics.median(bare)
    ratio = role_med / bare_med
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores"
    print(f"\n{args.num_prompts} prompts x {args.max_tokens} max new tokens, median of {args.repeats}; machine: {machine}\n")
    print("| path | tokens/s (median) | ratio | target | result |\n|---|---|---|---|---|")
    print(f"| rollout role (RayWorkerGroup, DataProto) | {role_med:.0f} | {ratio:.2f} | >= 0.95 | {'PASS' if ratio >= 0.95 else 'FAIL'} |")
    print(f"| bare vllm.LLM.generate | {bare_med:.0f} | 1.00 |  |  |")


if __name__ == "__main__":
    main()
