"""Controller mechanics (no RL here): workers, dispatch decorators, resource pools, worker groups.

The driver holds `RayWorkerGroup`s; each `@register`-ed Worker method becomes a group method
that splits its inputs over the ranks and gathers the outputs (decorator.py).
"""

from rlsys.single_controller.colocate import create_colocated_worker_cls
from rlsys.single_controller.decorator import Dispatch, Execute, register
from rlsys.single_controller.resource_pool import RayResourcePool
from rlsys.single_controller.results import WorkerDiedError
from rlsys.single_controller.worker import Worker
from rlsys.single_controller.worker_group import RayClassWithInitArgs, RayWorkerGroup

__all__ = ["Worker", "register", "Dispatch", "Execute", "RayResourcePool", "RayClassWithInitArgs",
           "RayWorkerGroup", "create_colocated_worker_cls", "WorkerDiedError"]
