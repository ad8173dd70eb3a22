"""Multi-turn tool rollouts end to end: a parquet file in verl's multi-turn layout trains 2 steps
(colocate, vLLM) and the batch the actor trains on holds model turns and tool tokens in order;
split placement with the HF engine and a tool that hangs finishes, the hang penalised per sample;
and vLLM's returned ids are kept exactly (a merges tokenizer, where decode -> encode differs)."""

from __future__ import annotations

import time

import pytest
import torch

from rlsys.envs.calculator import make_calculator_dataset
from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow
SCALE = 3  # the test tool multiplies the product by extra_info.tools_kwargs.calc.execute_kwargs.scale


def write_multi_turn_parquet(path, rows):
    """verl's multi-turn layout: tools_kwargs / interaction_kwargs in extra_info."""
    from scripts.make_dataset import write_parquet

    records = [{"data_source": r["data_source"], "prompt": [{"role": "user", "content": r["prompt"]}],
                "reward_model": {"style": "rule", "ground_truth": r["ground_truth"]},
                "extra_info": {"index": i, "need_tools_kwargs": True,
                               "tools_kwargs": {"calc": {"create_kwargs": {"ground_truth": r["ground_truth"]},
                                                         "execute_kwargs": {"scale": SCALE}}},
                               "interaction_kwargs": {"name": "calculator", "ground_truth": r["ground_truth"]}}}
               for i, r in enumerate(rows)]
    write_parquet(records, path)


def segments(ids, mask):
    """[(is_model, ids)] runs of equal mask."""
    out = []
    for token, m in zip(ids, mask):
        if out and out[-1][0] == bool(m):
            out[-1][1].append(token)
        else:
            out.append((bool(m), [token]))
    return out


def test_verl_multi_turn_parquet_trains_two_steps_and_actor_sees_tool_tokens_in_order(tmp_path):
    from transformers import AutoTokenizer

    from rlsys.models.tool_warmup import ensure_tool_model

    write_multi_turn_parquet(tmp_path / "train.parquet", make_calculator_dataset(64, seed=1, split="train"))
    write_multi_turn_parquet(tmp_path / "val.parquet", make_calculator_dataset(16, seed=0, split="val"))
    run_dir = tmp_path / "run"
    proc = run_main(run_dir, "+recipe=grpo_tools", f"data.train_files={tmp_path / 'train.parquet'}",
                    f"data.val_files={tmp_path / 'val.parquet'}", "rollout.multi_turn.tools.calc=tests.agent_envs:scaled_calc",
                    "trainer.total_steps=2", "trainer.test_freq=2",
                    "+roles.rec._target_=tests.agent_envs.BatchRecorder", f"+roles.rec.kwargs.out_dir={tmp_path / 'rec'}")
    assert proc.returncode == 0
    rows = {r["step"]: r for r in read_metrics(run_dir)}
    assert sorted(rows) == [0, 1, 2] and "val/multi_turn/tool_call_rate" in rows[0]
    for step in (1, 2):
        assert 0 < rows[step]["multi_turn/tool_call_rate"] <= 1 and rows[step]["multi_turn/turns_mean"] >= 1
        assert rows[step]["rollout_corr/logprob_abs_diff_mean"] < 1e-2  # trainer vs engine, model tokens only
    tokenizer = AutoTokenizer.from_pretrained(ensure_tool_model())
    batch = torch.load(tmp_path / "rec" / "rank0_step1.pt")
    width, num_tool_rows = batch["prompts"].shape[1], 0
    for row in range(batch["responses"].shape[0]):
        valid = batch["attention_mask"][row, width:].bool()
        ids, mask = batch["responses"][row][valid].tolist(), batch["response_mask"][row][valid].tolist()
        lp = batch["rollout_log_probs"][row][valid]
        assert (lp[torch.tensor(mask) == 0] == 0).all() and (lp[torch.tensor(mask) == 1] <= 0).all()
        parts = segments(ids, mask)
        assert parts[0][0], "a response starts with a model turn"
        for k, (is_model, part) in enumerate(parts):
            if is_model:
                continue
            call = tokenizer.decode(parts[k - 1][1])  # the model turn before the observation: "[calc:a*b]"
            a, b = call[call.index(":") + 1 : call.index("]")].split("*")
            assert tokenizer.decode(part) == f"({int(a) * int(b) * SCALE})"  # tools_kwargs reached the tool
            num_tool_rows += 1
    assert num_tool_rows > 0


def test_split_placement_hf_engine_hanging_tool_is_penalised_and_run_finishes(tmp_path):
    start = time.perf_counter()
    proc = run_main(tmp_path, "+recipe=grpo_tools", "placement=split", "rollout.name=hf",
                    "rollout.multi_turn.tools.calc=tests.agent_envs:hanging_tool",
                    "rollout.multi_turn.tool_timeout_s=0.2", "rollout.multi_turn.tool_error_penalty=-1.0",
                    "trainer.total_steps=2", "trainer.test_freq=0", "trainer.val_before_train=false",
                    "data.val_size=16", timeout_s=400)
    assert proc.returncode == 0
    assert time.perf_counter() - start < 300
    for row in [r for r in read_metrics(tmp_path) if r["step"] > 0]:
        assert row["multi_turn/tool_call_rate"] > 0
        assert row["multi_turn/error_rate"] == pytest.approx(row["multi_turn/tool_call_rate"])  # every call timed out
        assert row["multi_turn/env_reward_mean"] == pytest.approx(-row["multi_turn/observations_mean"])


@pytest.fixture(scope="module")
def merges_vllm_engine(tmp_path_factory):
    from rlsys.rollout.vllm_engine import VLLMEngine
    from tests.tito_model import build_merges_model_dir

    path = build_merges_model_dir(tmp_path_factory.mktemp("merges_vllm"))
    engine = VLLMEngine(str(path), dtype="float32", max_model_len=128)
    yield path, engine
    engine.shutdown()


def test_vllm_ids_are_kept_exactly_with_a_merges_tokenizer(merges_vllm_engine):
    from tests.unit.rollout.test_agent_loop import engine_turns, run_echo_loop

    from rlsys.rollout.agent import ObservationEncoder
    from tests.agent_envs import OBSERVATION

    path, engine = merges_vllm_engine
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    recorder, tensors, _, _ = run_echo_loop(engine, tokenizer)
    assert [num for num, _ in recorder.calls] == [8, 8, 8]  # one generate call per turn for all trajectories
    obs_ids = ObservationEncoder(tokenizer).encode(OBSERVATION, False)
    turns, drift = engine_turns(recorder, 8), 0
    for row in range(8):
        valid = tensors["attention_mask"][row, tensors["prompts"].shape[1]:].bool()
        expected = turns[row][0] + obs_ids + turns[row][1] + obs_ids + turns[row][2]
        assert tensors["responses"][row][valid].tolist() == expected
        mask = tensors["response_mask"][row][valid]
        model_ids = tensors["responses"][row][valid][mask.bool()].tolist()
        assert model_ids == turns[row][0] + turns[row][1] + turns[row][2]
        drift += tokenizer(tokenizer.decode(model_ids), add_special_tokens=False)["input_ids"] != model_ids
        lp = tensors["rollout_log_probs"][row][valid]
        assert (lp[~mask.bool()] == 0).all() and (lp[mask.bool()] < 0).all()
    assert drift > 0
