"""Worker classes for test_seed_examples.py (a module, so Ray worker processes can import them).

`SeedActor` / `SeedCritic` follow seed 003's verl section (Actor.add / Critic.sub, decorated with
`ray.remote` as there). `DDPWorker` follows its native-Ray section: one model replica per rank,
gloo DDP, one backward, then a gradient sample.
"""

from __future__ import annotations

import datetime
import os

import ray
import torch
from torch import nn

from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register


@ray.remote
class SeedActor(Worker):
    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def add(self, data: DataProto) -> DataProto:
        """a + rank on this rank's chunk of rows."""
        data.batch["a"] += self.rank  # in place, as in the seed
        return data


@ray.remote
class SeedCritic(Worker):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = config

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def sub(self, data: DataProto) -> DataProto:
        """a - config['b'] on this rank's chunk of rows."""
        data.batch["a"] -= self.config["b"]
        return data


class TinyAttn(nn.Module):
    """Self-attention + linear head: x [B, T, D] -> [B, T, D] (a small stand-in for the seed's DummyAttn)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x)
        return self.proj(out)


def build_model(seed: int) -> nn.Module:
    """The same initial weights on every rank (and on the driver) for a given seed."""
    torch.manual_seed(seed)
    return TinyAttn()


def sample_grad(model: nn.Module) -> tuple[str, torch.Tensor]:
    """(name, grad) of the first trainable parameter, as in the seed's sample_grads."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            return name, p.grad.detach().clone()
    raise AssertionError("model has no trainable parameter")


class DDPWorker(Worker):
    """One DDP replica of a TinyAttn on CPU; the process group is joined in init_dist, not __init__
    (the group waits for rank 0's constructor before it creates the other ranks)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.model = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_dist(self) -> dict:
        import torch.distributed as dist

        addr, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
        dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=self.rank,
                                world_size=self.world_size, timeout=datetime.timedelta(seconds=120))
        self.model = nn.parallel.DistributedDataParallel(build_model(self.seed))
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "master": (addr, port),
                "pid": os.getpid(), "pg_id": ray.get_runtime_context().get_placement_group_id()}

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def train_step(self, data: DataProto) -> DataProto:
        """loss = model(x).sum() on this rank's rows; backward all-reduces (averages) the grads."""
        loss = self.model(data.batch["x"]).sum()
        loss.backward()
        return DataProto.from_dict({"loss": loss.detach().expand(len(data)).clone()})

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sample_grads(self) -> tuple[str, torch.Tensor]:
        return sample_grad(self.model.module)
