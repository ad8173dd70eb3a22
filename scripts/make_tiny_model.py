"""Build the embedded tiny Qwen2 model: the warmed-up arithmetic base model, or random weights.

    python scripts/make_tiny_model.py                      # cached base model ($RLSYS_CACHE or ~/.cache/rlsys)
    python scripts/make_tiny_model.py --out /tmp/base      # warm up into a fresh directory
    python scripts/make_tiny_model.py --out /tmp/arith100m --shape arith-100m --device cuda  # ~104M base model
    python scripts/make_tiny_model.py --out /tmp/rand --random
    python scripts/make_tiny_model.py --out /tmp/q05 --random --shape qwen2.5-0.5b   # realistic size
    python scripts/make_tiny_model.py --out /tmp/base --check-vllm   # + vLLM vs HF greedy check

A shape's config.json declares that shape's context length (2048 or 32768, see
rlsys.models.shapes; the shapeless tiny model keeps 128); `--max-position-embeddings` sets
another for random weights. The warm-up at a shape uses that shape's recipe
(rlsys.models.warmup.SHAPE_WARMUP_CONFIGS) and is never cached, so it needs --out.

`--check-vllm` loads the directory in `vllm.LLM` (fp32, eager, max_model_len 128) and
checks that greedy completions of validation prompts equal HF greedy token for token.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsys.models.shapes import qwen2_shape  # noqa: E402
from rlsys.models.tiny import build_tiny_model_dir  # noqa: E402
from rlsys.models.warmup import (  # noqa: E402
    DONE_FILE,
    WarmupConfig,
    ensure_base_model,
    train_base_model,
    warmup_config_for,
)
from rlsys.tasks.arithmetic import make_arithmetic_dataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write here instead of the cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", action="store_true", help="random weights, no warm-up (needs --out)")
    parser.add_argument("--shape", default=None, help="a Qwen2 shape of rlsys.models.shapes "
                        "(default: the embedded tiny model); without --random it is warmed up (needs --out)")
    parser.add_argument("--device", default="cpu", help="warm-up device: cpu or cuda (bf16 autocast, fp32 weights)")
    parser.add_argument("--dtype", default="float32", help="with --random: dtype of the saved weights")
    parser.add_argument("--max-position-embeddings", type=int, default=None,
                        help="with --random: context length in config.json (default: the shape's)")
    parser.add_argument("--clean-steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--noisy-steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--check-vllm", action="store_true", help="compare vLLM and HF greedy outputs")
    return parser.parse_args()


def hf_greedy_ids(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        outputs.append(out[0, ids.shape[1]:].tolist())
    return outputs


def check_vllm(model_dir: Path, num_prompts: int = 32, max_new_tokens: int = 6) -> int:
    """Return the number of prompts whose vLLM greedy tokens differ from HF greedy tokens."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    prompts = [row["prompt"] for row in make_arithmetic_dataset(num_prompts, 0, "val")]
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
    vllm_ids = [list(o.outputs[0].token_ids) for o in outs]
    hf_ids = hf_greedy_ids(model_dir, prompts, max_new_tokens)
    mismatches = [(p, v, h) for p, v, h in zip(prompts, vllm_ids, hf_ids) if v != h]
    for prompt, v, h in mismatches:
        print(f"MISMATCH {prompt!r}: vllm={v} hf={h}")
    print(f"vLLM vs HF greedy: {len(prompts) - len(mismatches)}/{len(prompts)} prompts identical")
    print(f"example: {prompts[0]!r} -> {outs[0].outputs[0].text!r}")
    return len(mismatches)


def warmup_config(args: argparse.Namespace) -> WarmupConfig:
    """The shape's recipe with the step counts given on the command line."""
    steps = {"num_clean_steps": args.clean_steps, "num_noisy_steps": args.noisy_steps}
    return dataclasses.replace(warmup_config_for(args.shape), **{k: v for k, v in steps.items() if v is not None})


def main() -> int:
    args = parse_args()
    if args.random:
        if args.out is None:
            raise ValueError("--random needs --out (random weights are never cached)")
        if args.shape is not None:
            overrides = qwen2_shape(args.shape, args.max_position_embeddings)
        elif args.max_position_embeddings is not None:
            overrides = {"max_position_embeddings": args.max_position_embeddings}
        else:
            overrides = {}
        model_dir = build_tiny_model_dir(args.out, args.seed, dtype=args.dtype, **overrides)
    elif args.max_position_embeddings is not None:
        raise ValueError("--max-position-embeddings applies to --random only (a warm-up uses the shape's)")
    elif args.out is None:
        if args.shape is not None or args.device != "cpu":
            raise ValueError("--shape/--device warm up into --out DIR; only the tiny CPU model is cached")
        model_dir = ensure_base_model(seed=args.seed, config=warmup_config(args))
        print(json.dumps(json.loads((model_dir / DONE_FILE).read_text()), indent=2))
    else:
        stats = train_base_model(args.out, args.seed, warmup_config(args), shape=args.shape, device=args.device)
        print(json.dumps(stats, indent=2))
        model_dir = args.out
    print(f"model directory: {model_dir}")
    if args.check_vllm:
        return 1 if check_vllm(Path(model_dir)) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
