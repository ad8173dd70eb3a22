"""Synthetic arithmetic: prompts like "12+7=", answers like "19", and a verifiable reward.

The problem space is every `a <op> b` with 0 <= a, b <= max_operand. A fixed permutation
(independent of the sampling seed) puts 10% of the problems in the "val" split and the rest
in "train", so the splits never share a problem whatever seeds the caller uses; `seed`
only picks which problems of the split are drawn. The model is expected to answer with the
number and then its EOS token, e.g. "19<eos>" (at most 4 tokens for two-digit addition).

    rows = make_arithmetic_dataset(4096, seed=1, split="train")
    rows[0] == {"prompt": "53+38=", "ground_truth": "91", "data_source": "arithmetic"}  # e.g.
    arithmetic_reward("91<eos>", "91") == 1.0
"""

from __future__ import annotations

import re

import numpy as np

DATA_SOURCE = "arithmetic"
SPLITS = ("train", "val")
VAL_FRACTION = 0.1
_SPLIT_SEED = 20240611  # fixed forever: changing it would move problems between splits
_OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_FIRST_INTEGER = re.compile(r"-?\d+")


def format_prompt(a: int, op: str, b: int) -> str:
    """The prompt text for `a op b`, e.g. (12, "+", 7) -> "12+7="."""
    return f"{a}{op}{b}="


def solve(a: int, op: str, b: int) -> str:
    """The ground-truth answer as text, e.g. (12, "-", 70) -> "-58"."""
    return str(_OPERATORS[op](a, b))


def split_problems(split: str, ops: tuple[str, ...] = ("+",), max_operand: int = 99) -> list[tuple]:
    """All problems (a, op, b) of one split, in a fixed order.

    The train/val assignment depends only on the problem space (ops, max_operand), never on
    a sampling seed: problem k of the fixed permutation is "val" iff k < VAL_FRACTION * total.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    for op in ops:
        if op not in _OPERATORS:
            raise ValueError(f"ops contains {op!r}: supported operators are {sorted(_OPERATORS)}")
    if max_operand < 1:
        raise ValueError(f"max_operand={max_operand}: must be >= 1")
    problems = [(a, op, b) for op in ops for a in range(max_operand + 1) for b in range(max_operand + 1)]
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(problems))
    num_val = int(round(VAL_FRACTION * len(problems)))
    chosen = order[:num_val] if split == "val" else order[num_val:]
    return [problems[i] for i in chosen]


def make_arithmetic_dataset(
    num: int, seed: int, split: str, ops: tuple[str, ...] = ("+",), max_operand: int = 99
) -> list[dict]:
    """`num` distinct problems of `split` drawn with `seed`, as rows
    {"prompt": str, "ground_truth": str, "data_source": "arithmetic"}.

    Deterministic in (num, seed, split, ops, max_operand). Raises ValueError if the split
    holds fewer than `num` problems (two-digit addition: 9000 train, 1000 val).
    """
    pool = split_problems(split, tuple(ops), max_operand)
    if not 0 < num <= len(pool):
        raise ValueError(f"num={num}: split {split!r} has {len(pool)} problems (ops={ops}, max_operand={max_operand})")
    picked = np.random.default_rng(seed).choice(len(pool), size=num, replace=False)
    rows = []
    for i in picked:
        a, op, b = pool[i]
        rows.append({"prompt": format_prompt(a, op, b), "ground_truth": solve(a, op, b), "data_source": DATA_SOURCE})
    return rows


def extract_answer(response_text: str) -> str | None:
    """The first integer in the response (optional leading minus), or None if there is none."""
    match = _FIRST_INTEGER.search(response_text)
    return None if match is None else match.group(0)


def arithmetic_reward(response_text: str, ground_truth: str) -> float:
    """1.0 if the first integer in `response_text` equals `ground_truth` exactly, else 0.0.

    Text after the number (EOS, padding, words) is ignored; "019" does not match "19", and
    "-19" does not match "19".
    """
    answer = extract_answer(response_text)
    return 1.0 if answer is not None and answer == str(ground_truth).strip() else 0.0
