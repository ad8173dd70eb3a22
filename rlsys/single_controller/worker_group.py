"""RayWorkerGroup: N Ray actors of one worker class, driven as one object from the driver.

Every `@register`-ed method of the class becomes a method of the group: its arguments are
dispatched per rank, the ranks run it, and the outputs are collected (see decorator.py).
Actors are pinned to placement-group bundles and named `<prefix>_rank_<i>`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

from rlsys.protocol import DataProtoFuture
from rlsys.single_controller.decorator import (
    Dispatch, Execute, call_dispatch, collect_dp_compute_proto, get_dispatch_fns, registered_attrs,
    returns_dataproto,
)
from rlsys.single_controller.resource_pool import RayResourcePool


class WorkerDiedError(RuntimeError):
    """A worker process of a group died; the message names the group, method and rank."""


class RayClassWithInitArgs:
    """A worker class with its constructor arguments, and optional Ray actor options."""

    def __init__(self, cls, *args, **kwargs):
        self.cls, self.args, self.kwargs = cls, args, kwargs
        self.options: dict = {}

    def update_options(self, options: dict) -> "RayClassWithInitArgs":
        self.options.update(options)
        return self


def registered_methods(cls) -> dict[str, dict]:
    out = {}
    for name in dir(cls):
        attrs = registered_attrs(getattr(cls, name, None))
        if attrs is not None:
            out[name] = attrs
    return out


def _raise_from_ray(exc: Exception, where: str) -> None:
    """Re-raise a worker's exception with its original type, naming group, method and rank."""
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        raise WorkerDiedError(f"{where}: the worker process died ({type(exc).__name__})") from exc
    if isinstance(exc, GetTimeoutError) and not isinstance(exc, RayTaskError):
        raise TimeoutError(f"{where}: no result within the group's call timeout") from exc
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        try:
            new = type(cause)(f"{where}: {cause}")
        except Exception:
            raise exc.as_instanceof_cause() from None
        raise new from exc
    raise exc


class RayWorkerGroup:
    def __init__(self, resource_pool: Optional[RayResourcePool] = None,
                 ray_cls_with_init: Optional[RayClassWithInitArgs] = None, name_prefix: Optional[str] = None,
                 call_timeout_s: Optional[float] = None, *, _workers: Optional[list] = None,
                 _method_prefix: str = "", _bind_cls=None):
        self.name_prefix = name_prefix or (resource_pool.name_prefix if resource_pool else "rlsys")
        self.call_timeout_s = call_timeout_s
        self.resource_pool = resource_pool
        self.ray_cls_with_init = ray_cls_with_init
        self._method_prefix = _method_prefix
        self.workers = _workers if _workers is not None else self._create_workers()
        self._bind_methods(_bind_cls or ray_cls_with_init.cls)

    @property
    def world_size(self) -> int:
        return len(self.workers)

    # ---- actor creation -----------------------------------------------------------------
    def _create_workers(self) -> list:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pool, spec = self.resource_pool, self.ray_cls_with_init
        remote_cls = ray.remote(spec.cls)
        world_size = pool.world_size
        workers, master = [], None
        rank = 0
        for pg in pool.get_placement_groups():
            for local_rank in range(pg.bundle_count):
                env = {"WORLD_SIZE": str(world_size), "RANK": str(rank), "LOCAL_RANK": str(local_rank)}
                if master is not None:
                    env.update(MASTER_ADDR=master[0], MASTER_PORT=master[1])
                options = dict(
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=local_rank),
                    name=f"{self.name_prefix}_rank_{rank}",
                    runtime_env={"env_vars": env},
                    **pool.actor_resources(),
                )
                options.update(spec.options)
                worker = remote_cls.options(**options).remote(*spec.args, **spec.kwargs)
                if rank == 0:
                    master = ray.get(worker.get_master_addr_port.remote())
                workers.append(worker)
                rank += 1
        return workers

    # ---- method binding -----------------------------------------------------------------
    def _bind_methods(self, cls) -> None:
        for name, attrs in registered_methods(cls).items():
            if hasattr(RayWorkerGroup, name):
                raise ValueError(f"worker method {cls.__name__}.{name} shadows a RayWorkerGroup attribute")
            setattr(self, name, functools.partial(self._call, name, attrs))

    def _call(self, name: str, attrs: dict, *args, **kwargs):
        mode, execute, blocking = attrs["dispatch_mode"], attrs["execute_mode"], attrs["blocking"]
        where = f"{self.name_prefix}.{name}"
        per_rank_args, per_rank_kwargs = call_dispatch(mode, self, where, args, kwargs)
        pad_size = per_rank_kwargs.pop("_pad_size", 0)
        ranks = [0] if (execute == Execute.RANK_ZERO or mode == Dispatch.RANK_ZERO) else range(self.world_size)
        remote_name = self._method_prefix + name
        refs = [
            getattr(self.workers[r], remote_name).remote(
                *[a[r] for a in per_rank_args], **{k: v[r] for k, v in per_rank_kwargs.items()})
            for r in ranks
        ]
        _, collect_fn, _ = get_dispatch_fns(mode)
        if returns_dataproto(mode):
            collect_fn = functools.partial(collect_dp_compute_proto, pad_size=pad_size)
        if execute == Execute.RANK_ZERO and mode != Dispatch.RANK_ZERO:
            collect_fn = lambda wg, outputs: outputs[0]  # noqa: E731
        if not blocking:
            if returns_dataproto(mode):
                return DataProtoFuture(collect_fn=functools.partial(collect_fn, self), futures=refs)
            return refs
        return collect_fn(self, self.get_results(refs, name, list(ranks)))

    def get_results(self, refs: list, method: str, ranks: list[int]) -> list:
        """ray.get each rank's result in rank order, turning failures into named errors."""
        import ray

        outputs = []
        for rank, ref in zip(ranks, refs):
            try:
                outputs.append(ray.get(ref, timeout=self.call_timeout_s))
            except Exception as exc:  # noqa: BLE001 - re-raised with the rank named
                _raise_from_ray(exc, f"worker group {self.name_prefix!r}, method {method!r}, rank {rank}")
        return outputs

    # ---- direct calls -------------------------------------------------------------------
    def execute_all_async(self, method_name: str, *args, **kwargs) -> list:
        return [getattr(w, self._method_prefix + method_name).remote(*args, **kwargs) for w in self.workers]

    def execute_all(self, method_name: str, *args, **kwargs) -> list:
        refs = self.execute_all_async(method_name, *args, **kwargs)
        return self.get_results(refs, method_name, list(range(self.world_size)))

    def execute_rank_zero(self, method_name: str, *args, **kwargs) -> Any:
        ref = getattr(self.workers[0], self._method_prefix + method_name).remote(*args, **kwargs)
        return self.get_results([ref], method_name, [0])[0]

    # ---- colocated roles ----------------------------------------------------------------
    def spawn(self, prefix_set) -> dict[str, "RayWorkerGroup"]:
        """Views over the same actors, one per role of a WorkerDict, with plain method names."""
        role_classes = getattr(self.ray_cls_with_init.cls, "role_classes", None)
        if role_classes is None:
            raise ValueError("spawn() needs a group of a class made by create_colocated_worker_cls")
        views = {}
        for role in prefix_set:
            if role not in role_classes:
                raise ValueError(f"spawn: role {role!r} not in the WorkerDict (has {sorted(role_classes)})")
            views[role] = RayWorkerGroup(
                name_prefix=f"{self.name_prefix}.{role}", call_timeout_s=self.call_timeout_s,
                _workers=self.workers, _method_prefix=f"{role}_", _bind_cls=role_classes[role],
            )
        return views

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
