"""RayWorkerGroup: N Ray actors of one Worker class, driven from the driver as one object.

    pool = RayResourcePool([4], use_gpu=False, num_cpus_per_worker=0.5)
    actor_wg = RayWorkerGroup(pool, RayClassWithInitArgs(ActorWorker, config), name_prefix="actor")
    out = actor_wg.compute_log_prob(batch)     # a @register-ed method of ActorWorker

One actor per bundle, pinned with PlacementGroupSchedulingStrategy and named
`<prefix>_rank_<i>` (so `ray.get_actor("actor_rank_0")` finds it). Ranks get WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT through runtime_env env_vars; rank 0 is created first
and picks the rendezvous address. Every `@register`-ed method of the class (bases included)
becomes a bound method of the group: dispatch, run on the ranks the execute mode names,
collect. Failures name the group, method and rank (see results.py).
"""

from __future__ import annotations

import functools
import types
import uuid
from typing import Any, Optional

from rlsys.protocol import DataProtoFuture
from rlsys.single_controller.decorator import (
    AUTO_PAD_MODES, PROTO_INPUT_MODES, Dispatch, Execute, prepare_proto_args, registered_methods,
    resolve_dispatch_mode, unpad_output,
)
from rlsys.single_controller.resource_pool import RayResourcePool
from rlsys.single_controller.results import get_by_rank
from rlsys.single_controller.worker import Worker

_RESERVED_OPTIONS = ("name", "scheduling_strategy", "placement_group", "placement_group_bundle_index")


class RayClassWithInitArgs:
    """A Worker class (plain or `ray.remote`-decorated), its constructor args and Ray actor options."""

    def __init__(self, cls, *args, **kwargs):
        from ray.actor import ActorClass

        self.remote_cls = cls if isinstance(cls, ActorClass) else None
        self.cls = cls.__ray_metadata__.modified_class.__ray_actor_class__ if self.remote_cls else cls
        if not (isinstance(self.cls, type) and issubclass(self.cls, Worker)):
            raise ValueError(f"RayClassWithInitArgs: {self.cls!r} must be a subclass of rlsys Worker")
        self.args, self.kwargs = args, kwargs
        self.options: dict = {}

    def update_options(self, options: dict) -> "RayClassWithInitArgs":
        """Extra Ray actor options, e.g. {"runtime_env": {"env_vars": {...}}}; env vars are merged."""
        bad = sorted(set(options) & set(_RESERVED_OPTIONS))
        if bad:
            raise ValueError(f"update_options: {bad} are set by the worker group per rank")
        self.options.update(options)
        return self

    def actor_class(self):
        import ray

        return self.remote_cls if self.remote_cls is not None else ray.remote(self.cls)


class _GroupDataProtoFuture(DataProtoFuture):
    """A DataProtoFuture whose get() reports failures like a blocking call (rank named)."""

    def __init__(self, collect_fn, futures, ranks, where, timeout_s):
        super().__init__(collect_fn=collect_fn, futures=futures)
        self._ranks, self._where, self._timeout_s = ranks, where, timeout_s

    def get(self, timeout: Optional[float] = None) -> Any:
        outputs = get_by_rank(self.futures, self._ranks, self._where, timeout if timeout is not None else self._timeout_s)
        output = self.collect_fn(outputs)
        return self.dispatch_fn(output) if self.dispatch_fn is not None else output


def _collect(collect_fn, wg, pad_size: int, outputs: list):
    return unpad_output(collect_fn(wg, outputs), pad_size)


def _group_method(name: str, attrs: dict, fn):
    def method(self, *args, **kwargs):
        return self._call(name, attrs, args, kwargs)

    functools.update_wrapper(method, fn)
    return method


class RayWorkerGroup:
    def __init__(self, resource_pool: RayResourcePool, ray_cls_with_init: RayClassWithInitArgs,
                 name_prefix: Optional[str] = None, call_timeout_s: Optional[float] = None,
                 create_timeout_s: float = 300.0):
        """`call_timeout_s` bounds every blocking call (None: wait as long as the ranks run);
        `create_timeout_s` bounds actor start-up."""
        self.resource_pool = resource_pool
        self.ray_cls_with_init = ray_cls_with_init
        prefix = name_prefix or f"{resource_pool.name_prefix}_{ray_cls_with_init.cls.__name__}_{uuid.uuid4().hex[:6]}"
        workers = self._create_workers(prefix, create_timeout_s)
        self._setup(workers, ray_cls_with_init.cls, prefix, "", call_timeout_s)

    def _setup(self, workers: list, bind_cls: type, name_prefix: str, method_prefix: str,
               call_timeout_s: Optional[float]) -> None:
        self.workers = workers
        self.name_prefix = name_prefix
        self.call_timeout_s = call_timeout_s
        self._method_prefix = method_prefix
        for name, attrs in registered_methods(bind_cls).items():
            if hasattr(RayWorkerGroup, name):
                raise ValueError(f"worker method {bind_cls.__name__}.{name} shadows a RayWorkerGroup attribute")
            setattr(self, name, types.MethodType(_group_method(name, attrs, getattr(bind_cls, name)), self))

    @property
    def world_size(self) -> int:
        return len(self.workers)

    # ---- actor creation -----------------------------------------------------------------
    def _actor_options(self, pg, local_rank: int, rank: int, env: dict) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        user = dict(self.ray_cls_with_init.options)
        runtime_env = dict(user.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        return {**self.resource_pool.actor_resources(), **user, "runtime_env": runtime_env,
                "name": f"{self.name_prefix}_rank_{rank}",
                "scheduling_strategy": PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=local_rank)}

    def _create_workers(self, name_prefix: str, timeout_s: float) -> list:
        import ray

        self.name_prefix = name_prefix
        spec, remote_cls = self.ray_cls_with_init, self.ray_cls_with_init.actor_class()
        where = f"worker group {name_prefix!r}, method '__init__'"
        workers: list = []
        master_env: dict = {"MASTER_ADDR": "", "MASTER_PORT": ""}  # rank 0 fills these in
        try:
            for pg in self.resource_pool.get_placement_groups():
                for local_rank in range(pg.bundle_count):
                    rank = len(workers)
                    env = {"WORLD_SIZE": str(self.resource_pool.world_size), "RANK": str(rank),
                           "LOCAL_RANK": str(local_rank), **master_env}
                    options = self._actor_options(pg, local_rank, rank, env)
                    workers.append(remote_cls.options(**options).remote(*spec.args, **spec.kwargs))
                    if rank == 0:
                        addr, port = get_by_rank([workers[0].get_master_addr_port.remote()], [0], where, timeout_s)[0]
                        master_env = {"MASTER_ADDR": addr, "MASTER_PORT": str(port)}
            get_by_rank([w.__ray_ready__.remote() for w in workers], list(range(len(workers))), where, timeout_s)
        except BaseException:
            self._kill(workers)
            raise
        return workers

    # ---- calls --------------------------------------------------------------------------
    def _call(self, name: str, attrs: dict, args: tuple, kwargs: dict):
        mode, execute_mode, blocking = attrs["dispatch_mode"], attrs["execute_mode"], attrs["blocking"]
        where = f"worker group {self.name_prefix!r}, method {name!r}"
        dispatch_fn, collect_fn = resolve_dispatch_mode(mode)
        mode_name = f"Dispatch.{mode.name}" if isinstance(mode, Dispatch) else "custom dispatch"
        pad_size = 0
        try:
            if mode in PROTO_INPUT_MODES:
                args, kwargs, pad_size = prepare_proto_args(
                    self.world_size, args, kwargs, skip_first=mode is Dispatch.DP_COMPUTE_PROTO_WITH_FUNC,
                    pad=mode in AUTO_PAD_MODES)
            per_rank_args, per_rank_kwargs = dispatch_fn(self, *args, **kwargs)
        except ValueError as exc:
            raise ValueError(f"{where} ({mode_name}): {exc}") from exc
        only_rank_zero = execute_mode is Execute.RANK_ZERO or mode is Dispatch.RANK_ZERO
        ranks = [0] if only_rank_zero else list(range(self.world_size))
        self._check_per_rank(where, ranks, per_rank_args, per_rank_kwargs)
        refs = [getattr(self.workers[r], self._method_prefix + name).remote(
            *[a[r] for a in per_rank_args], **{k: v[r] for k, v in per_rank_kwargs.items()}) for r in ranks]
        if execute_mode is Execute.RANK_ZERO and mode is not Dispatch.RANK_ZERO:
            collect = lambda outputs: outputs[0]  # noqa: E731 - one rank ran: its output is the result
        else:
            collect = functools.partial(_collect, collect_fn, self, pad_size)
        if not blocking:
            if mode in AUTO_PAD_MODES and execute_mode is Execute.ALL:
                return _GroupDataProtoFuture(collect, refs, ranks, where, self.call_timeout_s)
            return refs
        return collect(get_by_rank(refs, ranks, where, self.call_timeout_s))

    @staticmethod
    def _check_per_rank(where: str, ranks: list[int], per_rank_args, per_rank_kwargs) -> None:
        for key, value in list(enumerate(per_rank_args)) + list(per_rank_kwargs.items()):
            if not isinstance(value, (list, tuple)) or len(value) <= max(ranks):
                raise ValueError(f"{where}: the dispatch function must give argument {key!r} as a list "
                                 f"with an entry for each of ranks {ranks}, got {value!r:.80}")

    def execute_all_async(self, method_name: str, *args, **kwargs) -> list:
        """Call `method_name` with the same args on every rank; a list of ObjectRefs."""
        return [getattr(w, self._method_prefix + method_name).remote(*args, **kwargs) for w in self.workers]

    def execute_all(self, method_name: str, *args, **kwargs) -> list:
        refs = self.execute_all_async(method_name, *args, **kwargs)
        where = f"worker group {self.name_prefix!r}, method {method_name!r}"
        return get_by_rank(refs, list(range(self.world_size)), where, self.call_timeout_s)

    def execute_rank_zero_async(self, method_name: str, *args, **kwargs):
        return getattr(self.workers[0], self._method_prefix + method_name).remote(*args, **kwargs)

    def execute_rank_zero(self, method_name: str, *args, **kwargs) -> Any:
        ref = self.execute_rank_zero_async(method_name, *args, **kwargs)
        where = f"worker group {self.name_prefix!r}, method {method_name!r}"
        return get_by_rank([ref], [0], where, self.call_timeout_s)[0]

    # ---- colocated roles and teardown ---------------------------------------------------
    def spawn(self, prefix_set) -> dict[str, "RayWorkerGroup"]:
        """Views over the same actors, one per role of a WorkerDict, with the role's plain method names."""
        role_classes = getattr(self.ray_cls_with_init.cls, "role_classes", None)
        if role_classes is None:
            raise ValueError("spawn() needs a group of a class made by create_colocated_worker_cls")
        views = {}
        for role in prefix_set:
            if role not in role_classes:
                raise ValueError(f"spawn: role {role!r} is not in the WorkerDict (roles: {sorted(role_classes)})")
            view = RayWorkerGroup.__new__(RayWorkerGroup)
            view.resource_pool, view.ray_cls_with_init = self.resource_pool, self.ray_cls_with_init
            view._setup(self.workers, role_classes[role], f"{self.name_prefix}.{role}", f"{role}_",
                        self.call_timeout_s)
            views[role] = view
        return views

    def shutdown(self) -> None:
        """Kill this group's actors (views of a WorkerDict share them: one shutdown ends all)."""
        self._kill(self.workers)
        self.workers = []

    @staticmethod
    def _kill(workers: list) -> None:
        import ray

        for worker in workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
