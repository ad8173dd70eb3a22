"""Controller mechanics (no RL here): workers, dispatch decorators, resource pools, worker groups.

The driver holds `RayWorkerGroup`s; each `@register`-ed Worker method becomes a group method
that splits its inputs over the ranks and gathers the outputs (decorator.py).
"""

from rlsys.single_controller.colocate import create_colocated_worker_cls
from rlsys.single_controller.decorator import (
    DISPATCH_MODE_FN_REGISTRY, Dispatch, Execute, collect_all_to_all, register, register_dispatch_mode,
    update_dispatch_mode,
)
from rlsys.single_controller.mesh import make_nd_compute_dataproto_dispatch_fn
from rlsys.single_controller.resource_pool import RayResourcePool, ResourcePoolExhaustedError
from rlsys.single_controller.results import WorkerDiedError
from rlsys.single_controller.worker import Worker
from rlsys.single_controller.worker_group import RayClassWithInitArgs, RayWorkerGroup

__all__ = ["Worker", "register", "Dispatch", "Execute", "RayResourcePool", "RayClassWithInitArgs",
           "RayWorkerGroup", "create_colocated_worker_cls", "WorkerDiedError", "ResourcePoolExhaustedError",
           "DISPATCH_MODE_FN_REGISTRY", "register_dispatch_mode", "update_dispatch_mode", "collect_all_to_all",
           "make_nd_compute_dataproto_dispatch_fn"]
