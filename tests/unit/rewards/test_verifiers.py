"""Built-in verifiers: number normalisation, GSM8K `####`, boxed math, arithmetic, dispatch."""

from __future__ import annotations

import pytest

from rlsys.rewards import builtin_reward
from rlsys.rewards.boxed import last_boxed_content, math_reward
from rlsys.rewards.gsm8k import extract_hash_answer, gsm8k_reward
from rlsys.rewards.normalize import answers_match, normalize_number


@pytest.mark.parametrize("text, expected", [
    ("1,234", "1234"), ("1,234,567.00", "1234567"), ("12.0", "12"), ("12.50", "12.5"),
    ("-5", "-5"), ("\u22125", "-5"), ("$-5", "-5"), ("-$5", "-5"), ("$1,000", "1000"), ("+7", "7"),
    (" 42. ", "42"), (".5", "0.5"), ("-0.0", "0"), ("100", "100"),
])
def test_normalize_number_canonical_forms(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text", ["1,2", "12,34", "1234,5", "abc", "", "-", "$", "--5", "-$-5", "1.2.3"])
def test_normalize_number_rejects_non_numbers(text):
    assert normalize_number(text) is None


@pytest.mark.parametrize("text, expected", [
    ("3*4=12\n#### 12", "12"),
    ("####12", "12"), ("####    12", "12"), ("#### \t 12 apples", "12"),
    ("#### 1,234", "1234"), ("#### $1,234.00", "1234"), ("#### -7", "-7"), ("#### $-7", "-7"),
    ("#### 5\nwait, no\n#### 6", "6"),  # the last #### wins
    ("#### 12.", "12"),
])
def test_extract_hash_answer(text, expected):
    assert extract_hash_answer(text) == expected


@pytest.mark.parametrize("text", ["the answer is 12", "#### twelve", "####", "### 12", ""])
def test_extract_hash_answer_none(text):
    assert extract_hash_answer(text) is None


def test_gsm8k_reward_scores_and_format_credit():
    assert gsm8k_reward("#### 1,234", "1234") == 1.0
    assert gsm8k_reward("#### 1234", "1,234") == 1.0
    assert gsm8k_reward("#### -3", "-3") == 1.0
    assert gsm8k_reward("#### 3", "-3") == 0.0
    assert gsm8k_reward("#### 72.0", "72") == 1.0
    assert gsm8k_reward("#### 13", "12", format_score=0.1) == 0.1
    assert gsm8k_reward("the answer is 12", "12", format_score=0.1) == 0.0  # no answer, no credit
    # the dataset's full solution as ground truth
    assert gsm8k_reward("#### 72", "She sold 48/2 = 24 clips in May.\n#### 72") == 1.0


def test_gsm8k_reward_rejects_non_numeric_ground_truth():
    with pytest.raises(ValueError, match="ground_truth"):
        gsm8k_reward("#### 1", "one")


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{5}", "5"),
    ("first \\boxed{1} then \\boxed{2}", "2"),  # last box wins
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\sqrt{\\frac{a}{b^{2}}}} done", "\\sqrt{\\frac{a}{b^{2}}}"),
    ("\\fbox{7}", "7"),
    ("so $\\boxed 9$", "9"),
    ("\\boxed{}", ""),
])
def test_last_boxed_content(text, expected):
    assert last_boxed_content(text) == expected


@pytest.mark.parametrize("text", ["no box here", "\\boxed{\\frac{1}{2}", "\\boxed{1} and \\boxed{unclosed"])
def test_last_boxed_content_none(text):
    assert last_boxed_content(text) is None


@pytest.mark.parametrize("predicted, truth", [
    ("\\frac{1}{2}", "0.5"), ("\\dfrac12", "1/2"), (".5", "\\frac{1}{2}"), ("-\\frac{3}{4}", "-0.75"),
    ("1,234", "1234"), ("x = 3", "3"), ("5^\\circ", "5"), ("\\$12.00", "12"), ("50\\%", "50"),
    ("\\left( 1, 2 \\right)", "(1,2)"), ("\\text{east}", "east"), ("\\sqrt2", "\\sqrt{2}"),
])
def test_answers_match_equivalent_forms(predicted, truth):
    assert answers_match(predicted, truth)


@pytest.mark.parametrize("predicted, truth", [("1/3", "0.33"), ("(1,2)", "(2,1)"), ("-2", "2"), ("", "")])
def test_answers_match_different(predicted, truth):
    assert not answers_match(predicted, truth)


def test_math_reward_last_box_nested_and_format_credit():
    assert math_reward("try \\boxed{3}, no: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}") == 1.0
    assert math_reward("\\boxed{\\frac{1}{2}} then \\boxed{3}", "\\frac{1}{2}") == 0.0
    assert math_reward("\\boxed{3}", "4", format_score=0.1) == 0.1
    assert math_reward("\\boxed{}", "4", format_score=0.1) == 0.0
    assert math_reward("the answer is 4", "4", format_score=0.1) == 0.0
    assert math_reward("\\boxed{4}", "so the answer is $\\boxed{4}$.") == 1.0


@pytest.mark.parametrize("source", ["openai/gsm8k", "gsm8k"])
def test_builtin_dispatches_gsm8k(source):
    assert builtin_reward(source, "#### 1,000", "1000") == 1.0
    assert builtin_reward(source, "\\boxed{1000}", "1000") == 0.0  # GSM8K wants ####


@pytest.mark.parametrize("source", ["math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval"])
def test_builtin_dispatches_math(source):
    assert builtin_reward(source, "\\boxed{0.5}", "\\frac{1}{2}") == 1.0
    assert builtin_reward(source, "#### 0.5", "\\frac{1}{2}") == 0.0


def test_builtin_arithmetic_and_format_score():
    assert builtin_reward("arithmetic", "19<eos>", "19") == 1.0
    assert builtin_reward("arithmetic", "-19", "19") == 0.0
    assert builtin_reward("arithmetic", "18", "19", format_score=0.2) == 0.2
    assert builtin_reward("arithmetic", "<eos>", "19", format_score=0.2) == 0.0


def test_builtin_unknown_source_names_it():
    with pytest.raises(ValueError, match="data_source='nope'.*reward.fn"):
        builtin_reward("nope", "1", "1")
