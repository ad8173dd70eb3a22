"""`load_reward_fn` and `make_reward_fn`: user functions by path or module, on_error policies."""

from __future__ import annotations

import math
import textwrap

import pytest

from rlsys.rewards import RewardScoringError, builtin_reward, load_reward_fn, make_reward_fn

USER_FN = textwrap.dedent('''
    def length_reward(data_source, solution_str, ground_truth, extra_info=None):
        if solution_str == "boom":
            raise KeyError("exploded")
        bonus = (extra_info or {}).get("bonus", 0.0)
        return float(len(solution_str) == int(ground_truth)) + bonus

    def with_format(data_source, solution_str, ground_truth, extra_info=None, format_score=0.0):
        return format_score

    def as_dict(data_source, solution_str, ground_truth, extra_info=None):
        return {"score": 0.75, "acc": True}

    def always_fails(data_source, solution_str, ground_truth, extra_info=None):
        raise RuntimeError("no")

    def bad_value(data_source, solution_str, ground_truth, extra_info=None):
        return {"nan": float("nan"), "none": None, "text": "1.0"}[solution_str]
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(USER_FN)
    return path


def test_load_reward_fn_default_is_builtin():
    assert load_reward_fn(None) is builtin_reward


def test_load_reward_fn_from_file_and_module(user_file):
    fn = load_reward_fn(f"{user_file}:length_reward")
    assert fn("any", "abc", "3") == 1.0
    assert load_reward_fn("rlsys.rewards.gsm8k:gsm8k_reward")("#### 2", "2") == 1.0


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected 'package.module:function'"),
    ("/does/not/exist.py:f", "does not exist"),
    ("rlsys.rewards.gsm8k:missing", "has no function 'missing'"),
])
def test_load_reward_fn_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        load_reward_fn(spec)


def test_score_batch_user_file_with_extra_info(user_file):
    score_batch = make_reward_fn(f"{user_file}:length_reward", "raise", 0.0)
    scores, errors = score_batch(["a", "b"], ["abc", "ab"], ["3", "3"], [{"bonus": 0.5}, None])
    assert scores == [1.5, 0.0] and errors == []
    assert score_batch(["a"], ["abc"], ["3"], None) == ([1.0], [])


def test_raise_names_index_source_response_and_cause(user_file):
    score_batch = make_reward_fn(f"{user_file}:length_reward", "raise", 0.0)
    with pytest.raises(RewardScoringError) as info:
        score_batch(["a", "src_b"], ["abc", "boom"], ["3", "3"], None)
    message = str(info.value)
    for part in ("sample 1", "data_source='src_b'", "response='boom'", "KeyError", "exploded", "reward.on_error"):
        assert part in message
    assert isinstance(info.value.__cause__, KeyError)


def test_zero_scores_failures_and_records_them(user_file):
    score_batch = make_reward_fn(f"{user_file}:length_reward", "zero", 0.0)
    scores, errors = score_batch(["a", "b", "c"], ["boom", "abc", "boom"], ["3", "3", "1"], None)
    assert scores == [0.0, 1.0, 0.0]
    assert [e["index"] for e in errors] == [0, 2]
    assert errors[1]["data_source"] == "c" and errors[1]["response"] == "boom"
    assert errors[1]["error"].startswith("KeyError")


def test_builtin_errors_follow_policy():
    """The built-in dispatcher raising on an unknown data_source is a per-sample error too."""
    scores, errors = make_reward_fn(None, "zero", 0.0)(["gsm8k", "unknown"], ["#### 1", "1"], ["1", "1"], None)
    assert scores == [1.0, 0.0] and len(errors) == 1 and "unknown" in errors[0]["error"]
    with pytest.raises(RewardScoringError, match="sample 1"):
        make_reward_fn(None, "raise", 0.0)(["gsm8k", "unknown"], ["#### 1", "1"], ["1", "1"], None)


def test_format_score_reaches_builtin_and_accepting_user_fns(user_file):
    builtin = make_reward_fn(None, "raise", 0.25)
    assert builtin(["gsm8k", "gsm8k", "math"], ["#### 2", "two", "\\boxed{3}"], ["1", "1", "4"], None)[0] == \
        [0.25, 0.0, 0.25]
    assert make_reward_fn(f"{user_file}:with_format", "raise", 0.3)(["a"], ["x"], ["1"], None)[0] == [0.3]
    # a user function without a format_score parameter is called with verl's four arguments
    assert make_reward_fn(f"{user_file}:length_reward", "raise", 0.3)(["a"], ["x"], ["1"], None)[0] == [1.0]


def test_dict_result_uses_score(user_file):
    assert make_reward_fn(f"{user_file}:as_dict", "raise", 0.0)(["a"], ["x"], ["1"], None) == ([0.75], [])


@pytest.mark.parametrize("response, message", [("nan", "non-finite"), ("none", "not a number"),
                                               ("text", "not a number")])
def test_non_numeric_results_are_errors(user_file, response, message):
    score_batch = make_reward_fn(f"{user_file}:bad_value", "zero", 0.0)
    scores, errors = score_batch(["a"], [response], ["1"], None)
    assert scores == [0.0] and message in errors[0]["error"] and all(map(math.isfinite, scores))
    with pytest.raises(RewardScoringError, match=message):
        make_reward_fn(f"{user_file}:bad_value", "raise", 0.0)(["a"], [response], ["1"], None)


def test_bad_on_error_and_length_mismatch():
    with pytest.raises(ValueError, match="reward.on_error='ignore'"):
        make_reward_fn(None, "ignore", 0.0)
    with pytest.raises(ValueError, match="2 texts"):
        make_reward_fn(None, "raise", 0.0)(["a"], ["x", "y"], ["1"], None)


def test_long_response_is_shortened_in_message(user_file):
    score_batch = make_reward_fn(f"{user_file}:always_fails", "raise", 0.0)
    with pytest.raises(RewardScoringError) as info:
        score_batch(["a"], ["start" + "x" * 5000 + "end"], ["1"], None)
    message = str(info.value)
    assert len(message) < 1500 and "start" in message and "end" in message and "[4608 chars]" in message
