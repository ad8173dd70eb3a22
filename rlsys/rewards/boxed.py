r"""Boxed-math verifier (MATH-style): the answer is the content of the last `\boxed{...}`.

    last_boxed_content("first \\boxed{1}, finally \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    last_boxed_content("\\boxed{\\sqrt{2}}") == "\\sqrt{2}"         # nested braces
    math_reward("so \\boxed{0.5}", "\\frac12") == 1.0               # compared as numbers
    math_reward("\\boxed{3}", "4", format_score=0.1) == 0.1         # boxed but wrong

Braces are matched by counting, so `\boxed{\frac{a}{b}}` keeps its inner groups; an unclosed
box counts as no answer. `\fbox{...}` and the brace-less `\boxed 5` are accepted too. The
ground truth may be bare (`\frac{1}{2}`) or itself contain a box (MATH's full solutions).
Equivalence is by `rlsys.rewards.normalize.answers_match`: exact rational values for numbers
and simple fractions, otherwise normalised LaTeX strings (no symbolic algebra).
"""

from __future__ import annotations

import re

from rlsys.rewards.normalize import answers_match

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)")


def _braced_group(text: str, start: int) -> str | None:
    """Content of the brace group opening at text[start] == "{", or None if it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def last_boxed_content(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` / `\fbox{...}` / `\boxed x` in `text`, or None."""
    matches = list(_BOX_COMMAND.finditer(text))
    if not matches:
        return None
    end = matches[-1].end()
    rest = text[end:]
    if rest.startswith("{"):
        return _braced_group(text, end)
    if rest.startswith(" "):  # "\boxed 5": the token up to whitespace or "$"
        token = re.match(r"\s+([^\s$]+)", rest)
        return None if token is None else token.group(1)
    return None


def math_reward(solution_str: str, ground_truth: str, format_score: float = 0.0, score: float = 1.0) -> float:
    """`score` if the last boxed answer matches the ground truth, `format_score` if there is a
    non-empty box that does not match, else 0.0."""
    predicted = last_boxed_content(solution_str)
    if predicted is None or not predicted.strip():
        return 0.0
    truth = str(ground_truth)
    if _BOX_COMMAND.search(truth):
        truth = last_boxed_content(truth) or ""
    if not truth.strip():
        raise ValueError(f"math ground_truth {ground_truth!r} is empty or has an unclosed box")
    return score if answers_match(predicted, truth) else format_score
