"""Worker: the base class of every Ray actor that a RayWorkerGroup starts.

A worker learns its place in the group from the environment the group sets: WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Rank 0 is created first with MASTER_*
empty: its `Worker.__init__` picks its node IP and a free port, and the group reads
them back (`get_master_addr_port`) to hand them to the other ranks. The worker never starts
torch.distributed itself: the role decides the backend (gloo on CPU, nccl on GPU) and when,
typically `torch.distributed.init_process_group(init_method="env://")` after
`super().__init__()`. Under Ray each actor sees only the GPUs it was given, so with one GPU
per worker the local CUDA device is index 0 whatever LOCAL_RANK says. verl's variables are
set too: RAY_LOCAL_RANK, RAY_LOCAL_WORLD_SIZE (ranks on this node), WG_PREFIX, WG_BACKEND.

Every Worker also has verl's group methods: `execute_func_rank_zero(fn, ...)` (fn runs on rank 0),
`execute_with_func_generator(fn, data)` (fn(worker, chunk) on every rank) and the mesh queries
that mesh.py's dispatch uses (`_register_dispatch_collect_info` in `__init__`).
"""

from __future__ import annotations

import os
import socket

from rlsys.single_controller.decorator import Dispatch, Execute, register


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


class MeshRegistrationError(ValueError, AssertionError):
    """A mesh registered twice or copied wrongly (AssertionError too, as verl asserts there)."""


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
        """pid, rank, node IP, Ray node id and the GPU ids Ray gave this process (for the group and tests)."""
        import ray

        return {"pid": os.getpid(), "rank": self.rank, "node_ip": node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    # ---- verl's mesh registration and function-running group methods --------------------
    def _mesh_info(self) -> tuple[dict, dict]:
        if "_mesh_dispatch_dp_rank" not in self.__dict__:  # a subclass may skip Worker.__init__
            self._mesh_dispatch_dp_rank, self._mesh_collect = {}, {}
        return self._mesh_dispatch_dp_rank, self._mesh_collect

    def _register_dispatch_collect_info(self, mesh_name: str, dp_rank: int, is_collect: bool) -> None:
        """This rank takes data-parallel slice `dp_rank` of mesh `mesh_name`; its output is kept if `is_collect`."""
        dp_ranks, collect = self._mesh_info()
        if mesh_name in dp_ranks:
            raise MeshRegistrationError(f"rank {self.rank}: mesh {mesh_name!r} is already registered")
        dp_ranks[mesh_name], collect[mesh_name] = int(dp_rank), bool(is_collect)

    def get_dispatch_collect(self) -> dict:
        """{"dispatch_dp_rank": {mesh: dp rank}, "collect_dp_rank": {mesh: is_collect}} of this worker."""
        dp_ranks, collect = self._mesh_info()
        return {"dispatch_dp_rank": dict(dp_ranks), "collect_dp_rank": dict(collect)}

    def set_dispatch_collect(self, mesh_name: str, dispatch_dp_rank: dict, collect_dp_rank: dict) -> None:
        """Register, as `mesh_name`, the one mesh of another worker's `get_dispatch_collect()`
        (how a colocated worker takes over its role's registration)."""
        if len(dispatch_dp_rank) != 1 or len(collect_dp_rank) != 1:
            raise MeshRegistrationError(f"set_dispatch_collect({mesh_name!r}): expected one mesh, got "
                                        f"{sorted(dispatch_dp_rank)}")
        self._register_dispatch_collect_info(mesh_name, next(iter(dispatch_dp_rank.values())),
                                             next(iter(collect_dp_rank.values())))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def _query_dispatch_info(self, mesh_name: str) -> int:
        dp_ranks, _ = self._mesh_info()
        if mesh_name not in dp_ranks:
            raise KeyError(f"rank {self.rank} ({type(self).__name__}) never registered mesh {mesh_name!r}; "
                           f"call self._register_dispatch_collect_info({mesh_name!r}, ...) in __init__")
        return dp_ranks[mesh_name]

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def _query_collect_info(self, mesh_name: str) -> bool:
        return self.query_collect_info(mesh_name)

    def query_collect_info(self, mesh_name: str) -> bool:
        _, collect = self._mesh_info()
        if mesh_name not in collect:
            raise KeyError(f"rank {self.rank} ({type(self).__name__}) never registered mesh {mesh_name!r}")
        return collect[mesh_name]

    @register(dispatch_mode=Dispatch.ALL_TO_ALL, execute_mode=Execute.RANK_ZERO)
    def execute_func_rank_zero(self, func, *args, **kwargs):
        """Run `func(*args, **kwargs)` in rank 0's process; the group returns its result."""
        return func(*args, **kwargs)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)
    def execute_with_func_generator(self, func, *args, **kwargs):
        """Run `func(self, chunk, ...)` on every rank with its chunk of the DataProto arguments."""
        return func(self, *args, **kwargs)

    def execute_method(self, method_name: str, *args, **kwargs):
        """Call any method by name (for helpers that are not `@register`-ed)."""
        return getattr(self, method_name)(*args, **kwargs)
