"""The lock-step agent loop: every live trajectory's next turn in one engine `generate` call.

    loop = AgentLoop.from_config(config, model_path)
    tensors, non_tensors = loop.run(engine, prompt_token_ids, rows, sampling)

Token-in/token-out by construction: a model turn's ids and log-probs are read from the
engine's padded output through its response_mask (the shared contract of
rlsys/rollout/outputs.py, so the vLLM and HF engines both work) and appended as they are;
the turn is decoded only to show its text to the environment. Observations are tokenised
once (`ObservationEncoder`) and appended with mask 0. Nothing is ever re-encoded. The
environment steps of a turn (tool calls) run on a thread pool, so a tool that hangs until its
timeout delays the turn once, not once per trajectory.

Budgets: `max_turns` model turns, `max_tokens_per_turn` per turn, and the response width
(`data.max_response_length`) for all turns and observations together. A trajectory that hits
one is cut there and marked `multi_turn_truncated`; with `on_budget=drop` its response_mask
is also zeroed (it is kept in the batch but trains nothing).
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

from rlsys.envs import ToolError, ToolRegistry, get_parser, load_object
from rlsys.rollout.agent.observations import ObservationEncoder
from rlsys.rollout.agent.trajectory import Trajectory, pack_trajectories

ON_BUDGET_CHOICES = ("truncate", "drop")
ON_TOOL_ERROR_CHOICES = ("penalty", "raise")
ENV_STEP_THREADS = 32  # environment steps of one turn run on up to this many threads
_TURN_SEED_STRIDE = 1_000_033  # turn k samples with seed + k * stride


def check_multi_turn_config(config) -> None:
    """Start-of-run checks of rollout.multi_turn (choices; env and tools must load)."""
    mt = config.rollout.multi_turn
    if not mt.enable:
        return
    if mt.on_budget not in ON_BUDGET_CHOICES:
        raise ValueError(f"rollout.multi_turn.on_budget={mt.on_budget!r}: expected one of {ON_BUDGET_CHOICES}")
    if mt.on_tool_error not in ON_TOOL_ERROR_CHOICES:
        raise ValueError(f"rollout.multi_turn.on_tool_error={mt.on_tool_error!r}: expected one of "
                         f"{ON_TOOL_ERROR_CHOICES}")
    get_parser(mt.parser)
    load_object(mt.env, "rollout.multi_turn.env")
    ToolRegistry(mt.tools, mt.tool_timeout_s)


class AgentLoop:
    def __init__(self, tokenizer, env_factory, *, max_turns: int, max_tokens_per_turn: int,
                 response_length: int, max_model_len: int, stop: tuple[str, ...] = (), on_budget: str = "truncate"):
        self.tokenizer, self.env_factory = tokenizer, env_factory
        self.max_turns, self.max_tokens_per_turn = max_turns, max_tokens_per_turn
        self.response_length, self.max_model_len = response_length, max_model_len
        self.on_budget = on_budget
        self.encoder = ObservationEncoder(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self.stop_token_ids, self.stop_strings = [], []
        for text in stop:  # a one-token stop string stops on its id: exact in both engines
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            (self.stop_token_ids.append(ids[0]) if len(ids) == 1 else self.stop_strings.append(text))

    @staticmethod
    def from_config(config, model_path: str) -> "AgentLoop":
        from transformers import AutoTokenizer

        mt = config.rollout.multi_turn
        check_multi_turn_config(config)
        parser = get_parser(mt.parser)
        tools = ToolRegistry(mt.tools, mt.tool_timeout_s)
        env_cls = load_object(mt.env, "rollout.multi_turn.env")
        offered = {"tools": tools, "parser": parser, "on_tool_error": mt.on_tool_error,
                   "tool_error_penalty": mt.tool_error_penalty}
        try:
            params = inspect.signature(env_cls).parameters
        except (TypeError, ValueError):
            params = {}
        extra = {k: v for k, v in offered.items() if k in params and k not in mt.env_kwargs}

        def env_factory():
            return env_cls(**extra, **dict(mt.env_kwargs))

        return AgentLoop(AutoTokenizer.from_pretrained(model_path), env_factory, max_turns=mt.max_turns,
                         max_tokens_per_turn=mt.max_tokens_per_turn,
                         response_length=config.data.max_response_length,
                         max_model_len=config.rollout.max_model_len, stop=parser.stop, on_budget=mt.on_budget)

    def start(self, prompt_token_ids: list[list[int]], rows: list[dict], n: int) -> list[Trajectory]:
        """n trajectories per prompt, prompt-major; each env reset on its row (a first observation is appended)."""
        trajectories = []
        for prompt, row in zip(prompt_token_ids, rows):
            for _ in range(n):
                t = Trajectory(prompt=list(prompt), env=self.env_factory())
                first = t.env.reset(dict(row))
                if first:
                    self._observe(t, first, turn_ended_with_eos=False)
                trajectories.append(t)
        return trajectories

    def run(self, engine, prompt_token_ids: list[list[int]], rows: list[dict], sampling: dict):
        """(tensors, non_tensors) of `pack_trajectories`: sampling["n"] trajectories per prompt."""
        trajectories = self.start(prompt_token_ids, rows, int(sampling.get("n", 1)))
        for turn in range(self.max_turns):
            live = [t for t in trajectories if not t.done and self._has_room(t)]
            if not live:
                break
            self._turn(engine, live, sampling, turn)
        for t in trajectories:
            if not t.done:  # out of turns or room while the environment still expected a turn
                t.finish(truncated=True)
        return pack_trajectories(trajectories, self.response_length, self.pad_token_id,
                                 drop_truncated=self.on_budget == "drop")

    def _has_room(self, t: Trajectory) -> bool:
        if len(t.tokens) < self.response_length and len(t.context) < self.max_model_len:
            return True
        t.finish(truncated=True)
        return False

    def _turn(self, engine, live: list[Trajectory], sampling: dict, turn: int) -> None:
        """One generate call for every live trajectory, then one environment step each."""
        room = [self.response_length - len(t.tokens) for t in live]
        max_tokens = min(self.max_tokens_per_turn, max(room), min(self.max_model_len - len(t.context) for t in live))
        params = dict(sampling, n=1, max_tokens=max_tokens,
                      stop_token_ids=tuple(self.stop_token_ids), stop=tuple(self.stop_strings))
        if sampling.get("seed") is not None:
            params["seed"] = int(sampling["seed"]) + turn * _TURN_SEED_STRIDE
        out = engine.generate([t.context for t in live], params)
        stepping = []
        for row, t in enumerate(live):
            valid = out["response_mask"][row].bool()
            tokens = out["responses"][row][valid].tolist()  # the engine's ids, as returned
            log_probs = out["rollout_log_probs"][row][valid].tolist()
            cut = len(tokens) > room[row]
            t.add_model_turn(tokens[: room[row]], log_probs[: room[row]])
            if cut:
                t.finish(truncated=True)
            else:
                stepping.append((t, tokens, row))
        # Environment steps (tool calls) of one turn run side by side: slow or hanging tools
        # cost one timeout per turn, not one per trajectory. Each step touches its own trajectory.
        with ThreadPoolExecutor(max_workers=max(1, min(ENV_STEP_THREADS, len(stepping)))) as pool:
            for done in [pool.submit(self._step_env, *args) for args in stepping]:
                done.result()  # in order: the first ToolError (on_tool_error=raise) is raised

    def _step_env(self, t: Trajectory, tokens: list[int], index: int) -> None:
        try:
            result = t.env.step(self.tokenizer.decode(tokens, skip_special_tokens=False))
        except ToolError as exc:  # on_tool_error=raise
            raise ToolError(f"multi-turn rollout, trajectory {index} of this turn (prompt "
                            f"{self.tokenizer.decode(t.prompt)!r}): {exc}") from exc
        t.env_reward += float(result.reward or 0.0)
        if result.error:
            t.errors.append(result.error)
        if result.done:
            t.finish()
            return
        if t.num_turns >= self.max_turns:
            t.finish(truncated=True)
            return
        if result.observation:
            self._observe(t, result.observation, turn_ended_with_eos=bool(tokens) and tokens[-1] in self.eos_ids)

    def _observe(self, t: Trajectory, observation: str, turn_ended_with_eos: bool) -> None:
        ids = self.encoder.encode(observation, turn_ended_with_eos)
        room = self.response_length - len(t.tokens)
        t.add_observation(ids[:room])
        if len(ids) >= room:  # nothing left for the model's next turn
            t.finish(truncated=True)
