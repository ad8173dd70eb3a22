"""Environments and tools used by the multi-turn tests (importable by Ray workers as tests.agent_envs)."""

from __future__ import annotations

import time

from rlsys.envs import Environment, StepResult
from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register

OBSERVATION = "[ok]"


class EchoEnv(Environment):
    """Answers every model turn with OBSERVATION until `turns` turns are done."""

    def __init__(self, turns: int = 3):
        super().__init__()
        self.turns = turns

    def reset(self, row):
        self.seen = 0
        self.ground_truth = row["ground_truth"]
        return None

    def step(self, turn_text):
        self.seen += 1
        if self.seen >= self.turns:
            return StepResult(None, 0.5, done=True)
        return StepResult(OBSERVATION, None, done=False)


def raising_tool(expression: str) -> str:
    raise RuntimeError(f"broken tool on {expression!r}")


def hanging_tool(expression: str) -> str:
    time.sleep(3600)
    return "never"


def garbage_tool(expression: str):
    return object()


def scaled_calc(expression: str, scale: int = 1) -> str:
    """The calculator times `scale` (set per row through verl's extra_info.tools_kwargs)."""
    from rlsys.envs.calculator import calculator

    return str(int(calculator(expression)) * int(scale))


class BatchRecorder(Worker):
    """A user role (roles.<name>) that saves the tensors of every scored batch, i.e. what the
    actor is about to train on, to `<out_dir>/rank<r>_step<k>.pt`."""

    KEYS = ("input_ids", "attention_mask", "responses", "response_mask", "rollout_log_probs", "prompts")

    def __init__(self, config, model_path: str, out_dir: str):
        super().__init__()
        self.out_dir, self.step = out_dir, 0

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def process_rollouts(self, data: DataProto) -> DataProto:
        import os

        import torch

        self.step += 1
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save({k: data.batch[k].clone() for k in self.KEYS},
                   os.path.join(self.out_dir, f"rank{self.rank}_step{self.step}.pt"))
        return DataProto.from_dict({"extra_scores": torch.zeros(len(data))})
