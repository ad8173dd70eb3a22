"""create_colocated_worker_cls: several roles in one Ray actor process (a WorkerDict).

    worker_dict = create_colocated_worker_cls({"actor": RayClassWithInitArgs(ActorWorker, cfg),
                                               "critic": RayClassWithInitArgs(CriticWorker, cfg)})
    wg = RayWorkerGroup(pool, worker_dict)   # a RayClassWithInitArgs, as in verl
    views = wg.spawn(prefix_set={"actor", "critic"})   # views["actor"].update_actor(batch)

A WorkerDict holds one instance of each role class (built with that role's init args) in
the same process. Each role's registered method `m` is exposed on the WorkerDict as
`<role>_m`, carrying the same register attributes, and the spawned views call those under
the plain name `m`. Every role reads rank and world size from the same environment, so
they agree. Roles stay separate classes: colocation is composition, not a mode flag.
The result is a RayClassWithInitArgs of the WorkerDict class (`.cls`); wrapping it again,
`RayClassWithInitArgs(worker_dict)`, gives an equal spec, so older code keeps working.
"""

from __future__ import annotations

import functools
import inspect

from rlsys.single_controller.decorator import MAGIC_ATTR, registered_methods
from rlsys.single_controller.worker import Worker
from rlsys.single_controller.worker_group import RayClassWithInitArgs


def _forwarder(role: str, name: str, fn, attrs: dict):
    """`<role>_<name>` on the WorkerDict: calls `name` on the role's instance (sync or async)."""
    if inspect.iscoroutinefunction(fn):
        async def forward(self, *args, **kwargs):
            return await getattr(self.roles[role], name)(*args, **kwargs)
    else:
        def forward(self, *args, **kwargs):
            return getattr(self.roles[role], name)(*args, **kwargs)
    functools.update_wrapper(forward, fn)
    forward.__name__ = forward.__qualname__ = f"{role}_{name}"
    setattr(forward, MAGIC_ATTR, attrs)
    return forward


def create_colocated_worker_cls(class_dict: dict) -> RayClassWithInitArgs:
    """A spec of a Worker class holding one instance per role; `class_dict` maps role -> class or RayClassWithInitArgs."""
    if not class_dict:
        raise ValueError("create_colocated_worker_cls needs at least one role")
    specs = {role: spec if isinstance(spec, RayClassWithInitArgs) else RayClassWithInitArgs(spec)
             for role, spec in class_dict.items()}

    def __init__(self):
        Worker.__init__(self)
        self.roles = {role: spec.cls(*spec.args, **spec.kwargs) for role, spec in specs.items()}

    namespace = {"__init__": __init__, "role_classes": {role: spec.cls for role, spec in specs.items()}}
    for role, spec in specs.items():
        for name, attrs in registered_methods(spec.cls).items():
            exposed = f"{role}_{name}"
            if exposed in namespace or hasattr(Worker, exposed):
                raise ValueError(f"create_colocated_worker_cls: role {role!r} method {name!r} gives the name "
                                 f"{exposed!r}, which is already taken")
            namespace[exposed] = _forwarder(role, name, getattr(spec.cls, name), attrs)
    return RayClassWithInitArgs(type("WorkerDict", (Worker,), namespace))
