"""GSM8K-style verifier: the answer is the number after the last `####` in the response.

    extract_hash_answer("so 3*4 = 12\\n#### 12") == "12"
    extract_hash_answer("#### $1,234.00")        == "1234"
    gsm8k_reward("#### 12", "12") == 1.0
    gsm8k_reward("#### 13", "12", format_score=0.1) == 0.1   # well-formed, wrong
    gsm8k_reward("the answer is 12", "12") == 0.0             # no "####": no credit

This is the strict format (as verl's `method="strict"`): a response without `#### <number>`
scores 0 however right its last number is. The ground truth may be the bare number (verl's
preprocessed GSM8K) or the dataset's full solution ending in `#### <number>`.
"""

from __future__ import annotations

import re

from rlsys.rewards.normalize import normalize_number

# After "####": spaces, then a number with optional sign, "$" and thousands commas.
_AFTER_HASHES = re.compile(r"^\s*([+\-\u2212]?\s*\$?\s*[+\-\u2212]?\s*[\d.][\d,]*(?:\.\d+)?)")


def extract_hash_answer(text: str) -> str | None:
    """The normalised number right after the last `####` in `text`, or None if there is none."""
    position = text.rfind("####")
    if position < 0:
        return None
    match = _AFTER_HASHES.match(text[position + 4 :])
    if match is None:
        return None
    return normalize_number(match.group(1).replace(" ", ""))


def gsm8k_reward(solution_str: str, ground_truth: str, format_score: float = 0.0, score: float = 1.0) -> float:
    """`score` if the `####` answer equals the ground truth as a number, `format_score` if a
    `####` answer is present but wrong, else 0.0."""
    predicted = extract_hash_answer(solution_str)
    if predicted is None:
        return 0.0
    truth_text = str(ground_truth)
    truth = extract_hash_answer(truth_text) if "####" in truth_text else normalize_number(truth_text)
    if truth is None:
        raise ValueError(f"GSM8K ground_truth {ground_truth!r} is not a number")
    return score if predicted == truth else format_score
