"""The built-in arithmetic task: dataset splits and the verifiable reward."""

from __future__ import annotations

import pytest

from rlsys.models.tiny import build_tokenizer
from rlsys.tasks import arithmetic_reward, make_arithmetic_dataset
from rlsys.tasks.arithmetic import extract_answer, split_problems


@pytest.mark.parametrize(
    "response, ground_truth, expected",
    [
        ("19", "19", 1.0),
        ("19<eos>", "19", 1.0),
        ("19<eos><pad><pad>", "19", 1.0),
        (" 19 is the answer", "19", 1.0),
        ("19abc 42", "19", 1.0),
        ("the answer is 19", "19", 1.0),
        ("-58", "-58", 1.0),
        ("125", 125, 1.0),  # an int ground truth is compared as text
        ("18", "19", 0.0),
        ("119", "19", 0.0),
        ("019", "19", 0.0),
        ("-19", "19", 0.0),
        ("58", "-58", 0.0),
        ("12 19", "19", 0.0),  # only the first number counts
        ("", "19", 0.0),
        ("no number here", "19", 0.0),
        ("<eos>", "0", 0.0),
    ],
)
def test_arithmetic_reward(response, ground_truth, expected):
    assert arithmetic_reward(response, ground_truth) == expected


def test_extract_answer():
    assert extract_answer("x-7y") == "-7"
    assert extract_answer("a1b2") == "1"
    assert extract_answer("+") is None


def test_split_sizes_and_disjoint_pools():
    train, val = split_problems("train"), split_problems("val")
    assert (len(train), len(val)) == (9000, 1000)
    assert not set(train) & set(val)
    assert set(train) | set(val) == {(a, "+", b) for a in range(100) for b in range(100)}


def test_sampled_splits_disjoint_whatever_the_seeds():
    train = {r["prompt"] for r in make_arithmetic_dataset(4096, seed=1, split="train")}
    for seed in (0, 1, 7):
        val = {r["prompt"] for r in make_arithmetic_dataset(128, seed=seed, split="val")}
        assert len(val) == 128
        assert not train & val


def test_dataset_deterministic_in_seed():
    assert make_arithmetic_dataset(64, 3, "train") == make_arithmetic_dataset(64, 3, "train")
    assert make_arithmetic_dataset(64, 3, "train") != make_arithmetic_dataset(64, 4, "train")


def test_rows_are_correct_and_loader_shaped():
    rows = make_arithmetic_dataset(200, 0, "train")
    for row in rows:
        assert set(row) == {"prompt", "ground_truth", "data_source"}
        assert row["data_source"] == "arithmetic"
        left, right = row["prompt"].rstrip("=").split("+")
        assert int(row["ground_truth"]) == int(left) + int(right)
        assert arithmetic_reward(row["ground_truth"], row["ground_truth"]) == 1.0


def test_prompts_and_answers_fit_default_lengths():
    # data.max_prompt_length=16 and data.max_response_length=8 in the default config.
    tok = build_tokenizer()
    rows = make_arithmetic_dataset(1000, 0, "val")
    assert max(len(tok(r["prompt"])["input_ids"]) for r in rows) <= 6
    assert max(len(tok(r["ground_truth"])["input_ids"]) + 1 for r in rows) <= 4  # + eos


def test_other_operators():
    rows = make_arithmetic_dataset(50, 0, "train", ops=("-", "*"), max_operand=9)
    for row in rows:
        op = "-" if "-" in row["prompt"] else "*"
        left, right = (int(x) for x in row["prompt"].rstrip("=").split(op))
        assert int(row["ground_truth"]) == (left - right if op == "-" else left * right)
    assert any(r["ground_truth"].startswith("-") for r in rows)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num=9001, seed=0, split="train"), "num=9001"),
        (dict(num=0, seed=0, split="val"), "num=0"),
        (dict(num=4, seed=0, split="test"), "split='test'"),
        (dict(num=4, seed=0, split="train", ops=("/",)), "'/'"),
        (dict(num=4, seed=0, split="train", max_operand=0), "max_operand=0"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_arithmetic_dataset(**kwargs)
