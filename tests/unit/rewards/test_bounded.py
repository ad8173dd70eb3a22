"""Issue 16.2-16.3: a hung reward function stopped by `reward.timeout_s`; the step's error fraction."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from rlsys.protocol import DataProto
from rlsys.rewards import RewardScoringError, make_reward_fn
from rlsys.trainer.reward_errors import check_reward_errors

HANGING_FN = '''
import time

def score(data_source, solution_str, ground_truth, extra_info=None):
    if solution_str == "hang":
        while True:  # sleeps forever
            time.sleep(3600)
    return float(solution_str == ground_truth)
'''
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def hanging_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "hanging.py"
    path.write_text(HANGING_FN)
    return path


def test_hung_call_raises_naming_function_and_sample(hanging_file):
    score_batch = make_reward_fn(f"{hanging_file}:score", "raise", timeout_s=TIMEOUT_S)
    assert score_batch(["s"] * 2, ["1", "2"], ["1", "1"]) == ([1.0, 0.0], [])  # child process up, scoring
    start = time.monotonic()
    with pytest.raises(RewardScoringError) as info:
        score_batch(["s", "src_b"], ["1", "hang"], ["1", "7"])
    assert time.monotonic() - start < TIMEOUT_S + 5
    for part in (f"reward function {hanging_file}:score", "sample 1", "data_source='src_b'", "response='hang'",
                 "RewardTimeoutError", f"reward.timeout_s={TIMEOUT_S:g}"):
        assert part in str(info.value), part
    assert score_batch(["s"], ["3"], ["3"]) == ([1.0], [])  # a fresh child: still usable


def test_hung_calls_score_zero_and_the_rest_of_the_batch_is_scored(hanging_file):
    score_batch = make_reward_fn(f"{hanging_file}:score", "zero", timeout_s=TIMEOUT_S)
    start = time.monotonic()
    scores, errors = score_batch(["s"] * 5, ["1", "hang", "2", "hang", "3"], ["1", "1", "2", "1", "0"])
    elapsed = time.monotonic() - start
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [e["index"] for e in errors] == [1, 3]
    assert all(e["error"].startswith("RewardTimeoutError") for e in errors)
    assert elapsed < 2 * TIMEOUT_S + 10, elapsed  # two timeouts, restarts from the forkserver are cheap
    print(f"\n[bounded reward] 5 samples, 2 hung, timeout {TIMEOUT_S} s: {elapsed:.2f} s")
    assert score_batch(["s"], ["4"], ["4"]) == ([1.0], [])


def test_in_process_and_bounded_give_the_same_scores(hanging_file):
    args = (["gsm8k", "arithmetic", "math"], ["#### 3", "19", "\\boxed{2}"], ["3", "19", "3"])
    assert make_reward_fn(None, "zero", 0.1)(*args) == make_reward_fn(None, "zero", 0.1, timeout_s=30.0)(*args)


def scored_batch(messages: list[str]) -> DataProto:
    return DataProto.from_dict({"scores": torch.zeros(len(messages))},
                               {"reward_error": np.array(messages, dtype=object)})


class RewardCfg:
    fn = "my.py:score"
    max_error_fraction = 0.5


def test_error_fraction_above_the_limit_stops_with_the_first_error(capsys):
    batch = scored_batch(["", "sample 1 of rank 0 (...): ValueError: bad", "sample 2 of rank 0: KeyError: 'x'", ""])
    assert check_reward_errors(batch, RewardCfg, step=3) == 2  # 50%: at the limit, a warning
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: step 3: reward function my.py:score failed on 2/4")
    assert "ValueError: bad" in warning[0] and "reward_error" not in batch.non_tensor_batch
    assert check_reward_errors(scored_batch(["", ""]), RewardCfg, step=4) == 0
    assert capsys.readouterr().err == ""  # a step without errors says nothing
    with pytest.raises(RewardScoringError, match=r"step 5: .* 3/4 samples \(75%\); first: sample 0: "
                                                 r"ValueError: bad; .*reward.max_error_fraction=0.5"):
        check_reward_errors(scored_batch(["sample 0: ValueError: bad", "x: E: 2", "y: E: 3", ""]), RewardCfg, 5)
