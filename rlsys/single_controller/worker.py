"""Worker: the base class of every Ray actor that a RayWorkerGroup starts.

It reads its place in the group from the environment the group sets (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and does not start torch.distributed itself: the role
decides the backend (gloo on CPU, nccl on GPU) and when.
"""

from __future__ import annotations

import os
import socket


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip_address() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (unit tests): loopback is the only address we can promise
        return "127.0.0.1"


class Worker:
    def __init__(self, *args, **kwargs):
        # Rank 0 chooses the rendezvous address the rest of the group is given.
        if os.environ.get("RANK", "0") == "0" and "MASTER_ADDR" not in os.environ:
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
        return os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]

    def get_process_info(self) -> dict:
        """pid, node and visible accelerators: used by the group and by tests."""
        import ray

        return {"pid": os.getpid(), "rank": self.rank, "node_ip": node_ip_address(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def execute_method(self, method_name: str, *args, **kwargs):
        return getattr(self, method_name)(*args, **kwargs)
