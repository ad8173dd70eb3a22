"""create_colocated_worker_cls: several roles in one Ray actor process (a WorkerDict).

    WorkerDict = create_colocated_worker_cls({"actor": RayClassWithInitArgs(Actor, cfg), "rollout": ...})
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(WorkerDict))
    views = wg.spawn(prefix_set={"actor", "rollout"})   # views["actor"].update_actor(batch)

Each role's registered method `m` is exposed on the WorkerDict as `<role>_m` with the same
dispatch attributes; the views call those under the plain name. Roles stay independent
classes: colocation is composition, not a mode flag.
"""

from __future__ import annotations

import functools
import inspect

from rlsys.single_controller.decorator import MAGIC_ATTR
from rlsys.single_controller.worker import Worker
from rlsys.single_controller.worker_group import RayClassWithInitArgs, registered_methods


def _forwarder(role: str, name: str, fn, attrs: dict):
    if inspect.iscoroutinefunction(fn):
        async def forward(self, *args, **kwargs):
            return await getattr(self.roles[role], name)(*args, **kwargs)
    else:
        def forward(self, *args, **kwargs):
            return getattr(self.roles[role], name)(*args, **kwargs)
    functools.update_wrapper(forward, fn)
    forward.__name__ = f"{role}_{name}"
    setattr(forward, MAGIC_ATTR, attrs)
    return forward


def create_colocated_worker_cls(class_dict: dict) -> type:
    specs = {role: spec if isinstance(spec, RayClassWithInitArgs) else RayClassWithInitArgs(spec)
             for role, spec in class_dict.items()}
    if not specs:
        raise ValueError("create_colocated_worker_cls needs at least one role")

    def __init__(self):
        Worker.__init__(self)
        self.roles = {role: spec.cls(*spec.args, **spec.kwargs) for role, spec in specs.items()}

    namespace = {"__init__": __init__, "role_classes": {r: s.cls for r, s in specs.items()}}
    for role, spec in specs.items():
        for name, attrs in registered_methods(spec.cls).items():
            namespace[f"{role}_{name}"] = _forwarder(role, name, getattr(spec.cls, name), attrs)
    return type("WorkerDict", (Worker,), namespace)
