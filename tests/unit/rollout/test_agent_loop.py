"""Token-in/token-out multi-turn rollouts with a real (in-process) HF engine.

The model's tokenizer has BPE merges, so decoding its sampled ids and encoding the text again
gives different ids: the test checks that the trajectory holds the engine's ids, not those.
"""

from __future__ import annotations

import pytest
import torch

from rlsys.rollout.agent import AgentLoop, ObservationEncoder
from rlsys.rollout.hf_engine import HFEngine
from tests.agent_envs import OBSERVATION, EchoEnv
from tests.tito_model import build_merges_model_dir


class RecordingEngine:
    """A real engine whose generate outputs are kept, in call order (what the engine returned)."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, prompts, sampling):
        out = self.engine.generate(prompts, sampling)
        self.calls.append((len(prompts), out))
        return out


@pytest.fixture(scope="module")
def merges_model(tmp_path_factory):
    path = build_merges_model_dir(tmp_path_factory.mktemp("merges_model"))
    engine = HFEngine.from_pretrained(str(path))
    return path, engine


def run_echo_loop(engine, tokenizer, turns=3, n=4, response_length=40, seed=7):
    loop = AgentLoop(tokenizer, lambda: EchoEnv(turns), max_turns=turns, max_tokens_per_turn=8,
                     response_length=response_length, max_model_len=128)
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ("ab", "cd hij")]
    rows = [{"ground_truth": "x", "data_source": "test"}] * 2
    recorder = RecordingEngine(engine)
    tensors, non_tensors = loop.run(recorder, prompts, rows, {"n": n, "temperature": 1.0, "seed": seed,
                                                              "max_tokens": 8})
    return recorder, tensors, non_tensors, prompts


def engine_turns(recorder, num_rows):
    """Per trajectory, the model ids of each turn as the engine returned them (lock-step order)."""
    turns = [[] for _ in range(num_rows)]
    live = list(range(num_rows))
    for num, out in recorder.calls:
        assert num == len(live), "one generate call per turn covering every live trajectory"
        for row, traj in enumerate(live):
            turns[traj].append(out["responses"][row][out["response_mask"][row].bool()].tolist())
        # every EchoEnv trajectory runs all turns unless eos ended... it never ends early: all stay live
    return turns


def test_trained_ids_are_the_engines_ids_plus_observation_ids_in_order(merges_model):
    path, engine = merges_model
    tokenizer = engine.tokenizer
    recorder, tensors, _, _ = run_echo_loop(engine, tokenizer)
    assert len(recorder.calls) == 3 and all(num == 8 for num, _ in recorder.calls)  # lock-step: 8 rows a call
    obs_ids = ObservationEncoder(tokenizer).encode(OBSERVATION, turn_ended_with_eos=False)
    assert obs_ids == tokenizer(OBSERVATION, add_special_tokens=False)["input_ids"]  # no chat template here
    turns = engine_turns(recorder, 8)
    drift = 0
    for row in range(8):
        valid = tensors["attention_mask"][row, tensors["prompts"].shape[1]:].bool()
        got = tensors["responses"][row][valid].tolist()
        expected, expected_mask = [], []
        for k, ids in enumerate(turns[row]):
            expected += ids
            expected_mask += [1] * len(ids)
            if k < 2:
                expected += obs_ids
                expected_mask += [0] * len(obs_ids)
        assert got == expected
        assert tensors["response_mask"][row][valid].tolist() == expected_mask
        model_ids = [t for t, m in zip(got, expected_mask) if m]
        drift += tokenizer(tokenizer.decode(model_ids), add_special_tokens=False)["input_ids"] != model_ids
    assert drift > 0, "the case must be one where decode -> encode changes the ids"
    assert tensors["multi_turn_num_turns"].tolist() == [3] * 8
    assert tensors["multi_turn_num_observations"].tolist() == [2] * 8
    assert torch.allclose(tensors["env_rewards"], torch.full((8,), 0.5))


def test_rollout_log_probs_are_the_engines_on_model_tokens_and_zero_on_observations(merges_model):
    _, engine = merges_model
    tokenizer = engine.tokenizer
    _, t, _, _ = run_echo_loop(engine, tokenizer, seed=11)
    mask, lp = t["response_mask"].bool(), t["rollout_log_probs"]
    assert (lp[~mask] == 0).all() and (lp[mask] < 0).all()
    # Teacher-forced log-probs of the same model on the packed sequence (what the actor computes):
    # at model tokens they equal the engine's sampling log-probs, so positions line up.
    with torch.no_grad():
        logits = engine.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                              position_ids=t["position_ids"]).logits.float()
    width = t["prompts"].shape[1]
    scores = torch.log_softmax(logits[:, width - 1 : -1], dim=-1).gather(-1, t["responses"].unsqueeze(-1))[..., 0]
    assert torch.allclose(scores[mask], lp[mask], atol=1e-4)


def test_budgets_truncate_and_mark(merges_model):
    _, engine = merges_model
    tokenizer = engine.tokenizer
    _, t, _, _ = run_echo_loop(engine, tokenizer, turns=3, response_length=12)
    assert (t["multi_turn_truncated"] == 1).all()  # 8 + 4 obs tokens fill 12: no room for turn 2
    assert (t["attention_mask"][:, t["prompts"].shape[1]:].sum(-1) <= 12).all()
    loop = AgentLoop(tokenizer, lambda: EchoEnv(5), max_turns=2, max_tokens_per_turn=4, response_length=40,
                     max_model_len=128, on_budget="drop")
    tensors, _ = loop.run(engine, [[5, 6]], [{"ground_truth": "x"}], {"n": 2, "temperature": 1.0, "max_tokens": 4})
    assert tensors["multi_turn_num_turns"].tolist() == [2, 2]  # max_turns reached while the env wanted more
    assert tensors["multi_turn_truncated"].tolist() == [1, 1] and tensors["response_mask"].sum() == 0


def test_chat_template_tool_role_wraps_observations():
    from rlsys.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}\n"
                               "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    encoder = ObservationEncoder(tokenizer)
    assert encoder.text("42", turn_ended_with_eos=True) == "\n<tool>42<eos>\n<assistant>"
    assert encoder.text("42", turn_ended_with_eos=False) == "<eos>\n<tool>42<eos>\n<assistant>"


class _RaisingEnv:
    def reset(self, row):
        return None

    def step(self, turn_text):
        from rlsys.envs import ToolError

        raise ToolError("tool 'calc' raised RuntimeError: boom")


def test_on_tool_error_raise_names_the_trajectory_and_prompt(merges_model):
    from rlsys.envs import ToolError

    _, engine = merges_model
    tokenizer = engine.tokenizer
    loop = AgentLoop(tokenizer, _RaisingEnv, max_turns=2, max_tokens_per_turn=4, response_length=16, max_model_len=64)
    prompt = tokenizer("ab", add_special_tokens=False)["input_ids"]
    with pytest.raises(ToolError, match=r"trajectory 0 of this turn \(prompt 'ab'\): tool 'calc' raised"):
        loop.run(engine, [prompt], [{}], {"n": 1, "temperature": 0.0, "max_tokens": 4})


def test_from_config_loads_env_and_tools_by_dotted_path_and_rejects_bad_choices(merges_model):
    from omegaconf import OmegaConf

    from rlsys.config.schema import RLConfig
    from rlsys.rollout.agent import check_multi_turn_config

    path, engine = merges_model
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RLConfig), {
        "data": {"max_response_length": 24}, "rollout": {"max_model_len": 64, "multi_turn": {
            "enable": True, "env": "tests.agent_envs:EchoEnv", "env_kwargs": {"turns": 2}, "max_tokens_per_turn": 4}}}))
    loop = AgentLoop.from_config(config, str(path))
    tensors, _ = loop.run(engine, [[70, 71]], [{"ground_truth": "x"}], {"n": 1, "temperature": 0.0, "max_tokens": 4})
    assert tensors["multi_turn_num_turns"].tolist() == [2] and tensors["multi_turn_num_observations"].tolist() == [1]
    config.rollout.multi_turn.on_budget = "explode"
    with pytest.raises(ValueError, match="rollout.multi_turn.on_budget='explode'"):
        check_multi_turn_config(config)
    config.rollout.multi_turn.on_budget, config.rollout.multi_turn.env = "truncate", "tests.agent_envs:Nope"
    with pytest.raises(ValueError, match="rollout.multi_turn.env='tests.agent_envs:Nope'"):
        check_multi_turn_config(config)
