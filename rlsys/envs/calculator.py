"""The embedded tool task: two-digit multiplication with a calculator tool.

Prompts are "37*58="; the tiny model cannot multiply in its head, but it can call the tool,
`[calc:37*58]`, read the observation "(2146)" and copy it: the whole response is
"[calc:37*58](2146)2146<eos>", where the model wrote "[calc:37*58]" and "2146<eos>"
(response_mask 1) and the environment wrote "(2146)" (mask 0). The reward is 1 when the
integer after the last tool call (or the first integer, with no call) is the product.

    rows = make_calculator_dataset(512, seed=1, split="train")  # {"prompt": "37*58=", "ground_truth": "2146", ...}
    calculator("37*58") == "2146"
    calculator_reward("calculator", "[calc:37*58]2146", "2146") == 1.0
"""

from __future__ import annotations

import re

import numpy as np

DATA_SOURCE = "calculator"
TOOL_NAME = "calc"
OPERAND_RANGE = (11, 99)  # a, b in [11, 99]: 7921 problems, 10% of them "val"
VAL_FRACTION = 0.1
_SPLIT_SEED = 20261202
_EXPRESSION = re.compile(r"^\s*(-?\d{1,6})\s*([-+*/])\s*(-?\d{1,6})\s*$")
_INTEGER = re.compile(r"-?\d+")


def calculator(expression: str) -> str:
    """Evaluate `a op b` (integers of up to 6 digits, op one of + - * /); ValueError otherwise.

    Division returns the exact quotient when it is an integer, else 4 decimals.
    """
    match = _EXPRESSION.match(str(expression))
    if match is None:
        raise ValueError(f"cannot evaluate {expression!r}: expected 'a op b' with integers a, b and op in + - * /")
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "+":
        return str(a + b)
    if op == "-":
        return str(a - b)
    if op == "*":
        return str(a * b)
    if b == 0:
        raise ValueError("division by zero")
    return str(a // b) if a % b == 0 else f"{a / b:.4f}"


def format_prompt(a: int, b: int) -> str:
    return f"{a}*{b}="


def tool_call_text(a: int, b: int) -> str:
    """The model's call for `a*b` in the tag format."""
    return f"[{TOOL_NAME}:{a}*{b}]"


def observation_text(result: str) -> str:
    """ToolEnv's default result_format applied to a result."""
    return f"({result})"


def split_problems(split: str) -> list[tuple[int, int]]:
    """All (a, b) of one split, in a fixed order independent of any sampling seed."""
    if split not in ("train", "val"):
        raise ValueError(f"split={split!r}: expected train or val")
    low, high = OPERAND_RANGE
    problems = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(problems))
    num_val = int(round(VAL_FRACTION * len(problems)))
    chosen = order[:num_val] if split == "val" else order[num_val:]
    return [problems[i] for i in chosen]


def make_calculator_dataset(num: int, seed: int, split: str) -> list[dict]:
    """`num` distinct problems of `split`: rows {"prompt", "ground_truth", "data_source"}."""
    pool = split_problems(split)
    if not 0 < num <= len(pool):
        raise ValueError(f"num={num}: split {split!r} of the calculator task has {len(pool)} problems")
    picked = np.random.default_rng(seed).choice(len(pool), size=num, replace=False)
    return [{"prompt": format_prompt(*pool[i]), "ground_truth": str(pool[i][0] * pool[i][1]),
             "data_source": DATA_SOURCE} for i in picked]


def final_answer(model_text: str) -> str | None:
    """The integer after the last tool call's "]" (or the first integer when there is no call)."""
    tail = model_text.rsplit("]", 1)[-1] if "]" in model_text else model_text
    match = _INTEGER.search(tail)
    return None if match is None else match.group(0)


def calculator_reward(data_source: str, solution_str: str, ground_truth, extra_info=None) -> float:
    """1.0 if the final answer (see `final_answer`) equals `ground_truth`, else 0.0 (reward.fn)."""
    answer = final_answer(solution_str)
    return 1.0 if answer is not None and answer == str(ground_truth).strip() else 0.0
