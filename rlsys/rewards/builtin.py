r"""Built-in rule-based verifiers, chosen by a sample's `data_source`.

    builtin_reward("openai/gsm8k", "... #### 72", "72") == 1.0
    builtin_reward("lighteval/MATH", "... \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    builtin_reward("arithmetic", "19<eos>", "19") == 1.0

`format_score` is the partial credit for a well-formed but wrong answer: a `#### n` line
(GSM8K), a non-empty `\boxed{}` (math), a leading integer (arithmetic). A response with no
answer at all scores 0.0. An unknown data_source raises ValueError naming it.
"""

from __future__ import annotations

from rlsys.rewards.boxed import math_reward
from rlsys.rewards.gsm8k import gsm8k_reward

GSM8K_SOURCES = ("openai/gsm8k", "gsm8k")
MATH_SOURCES = ("math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500")


def arithmetic_with_format(solution_str: str, ground_truth: str, format_score: float = 0.0) -> float:
    """The built-in arithmetic task's reward, with `format_score` for a wrong leading integer."""
    from rlsys.tasks.arithmetic import arithmetic_reward, extract_answer

    reward = arithmetic_reward(solution_str, ground_truth)
    if reward == 0.0 and extract_answer(solution_str) is not None:
        return format_score
    return reward


def builtin_reward(data_source: str, solution_str: str, ground_truth: str, extra_info=None,
                   format_score: float = 0.0) -> float:
    """Score one response with the verifier for `data_source` (verl's reward signature)."""
    if data_source == "arithmetic":
        return arithmetic_with_format(solution_str, ground_truth, format_score)
    if data_source in GSM8K_SOURCES:
        return gsm8k_reward(solution_str, ground_truth, format_score)
    if data_source in MATH_SOURCES:
        return math_reward(solution_str, ground_truth, format_score)
    known = ("arithmetic",) + GSM8K_SOURCES + MATH_SOURCES
    raise ValueError(f"no built-in reward for data_source={data_source!r} (built-in: {', '.join(known)}); "
                     "set reward.fn=package.module:function")
