"""Worker: the base class of every Ray actor that a RayWorkerGroup starts.

A worker learns its place in the group from the environment the group sets: WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Rank 0 is created first with MASTER_*
empty: its `Worker.__init__` picks its node IP and a free port, and the group reads
them back (`get_master_addr_port`) to hand them to the other ranks. The worker never starts
torch.distributed itself: the role decides the backend (gloo on CPU, nccl on GPU) and when,
typically `torch.distributed.init_process_group(init_method="env://")` after
`super().__init__()`. Under Ray each actor sees only the GPUs it was given, so with one GPU
per worker the local CUDA device is index 0 whatever LOCAL_RANK says.
"""

from __future__ import annotations

import os
import socket


def find_free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip_address() -> str:
    """This node's IP as Ray sees it; loopback when Ray is not importable or not running."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray only loopback is certain
        return "127.0.0.1"


class Worker:
    """Base class of group workers: `rank`, `world_size`, `local_rank` and the rendezvous address."""

    def __init__(self) -> None:
        if self.rank == 0:
            self._ensure_master_addr_port()

    @staticmethod
    def _ensure_master_addr_port() -> None:
        # Rank 0 chooses the rendezvous address that the group then gives to every other rank.
        # Empty counts as unset: the group gives rank 0 empty values so that an address the
        # driver's environment happened to hold is never shared by two groups.
        if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
            os.environ["MASTER_ADDR"] = node_ip_address()
            os.environ["MASTER_PORT"] = str(find_free_port())

    @property
    def rank(self) -> int:
        return int(os.environ.get("RANK", "0"))

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))

    @property
    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", "0"))

    def get_master_addr_port(self) -> tuple[str, str]:
        """(MASTER_ADDR, MASTER_PORT) of this process; rank 0 picks them if still unset."""
        if self.rank == 0:
            self._ensure_master_addr_port()
        return os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]

    def get_process_info(self) -> dict:
        """pid, rank, node IP and the GPU ids Ray gave this process (for the group and tests)."""
        import ray

        return {"pid": os.getpid(), "rank": self.rank, "node_ip": node_ip_address(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def execute_method(self, method_name: str, *args, **kwargs):
        """Call any method by name (for helpers that are not `@register`-ed)."""
        return getattr(self, method_name)(*args, **kwargs)
