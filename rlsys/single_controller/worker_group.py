"""RayWorkerGroup: N Ray actors of one Worker class, driven from the driver as one object.

    pool = RayResourcePool([4], use_gpu=False, num_cpus_per_worker=0.5)
    actor_wg = RayWorkerGroup(pool, RayClassWithInitArgs(ActorWorker, config), name_prefix="actor")
    out = actor_wg.compute_log_prob(batch)     # a @register-ed method of ActorWorker

One actor per bundle, pinned with PlacementGroupSchedulingStrategy and named
`<prefix>_rank_<i>` (so `ray.get_actor("actor_rank_0")` finds it; `worker_names` lists them).
Ranks get WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and verl's RAY_LOCAL_RANK,
RAY_LOCAL_WORLD_SIZE, WG_PREFIX, WG_BACKEND) through runtime_env env_vars, plus `worker_env`;
rank 0 is created first and picks the rendezvous address. Every `@register`-ed method of the class (bases included)
becomes a bound method of the group: dispatch, run on the ranks the execute mode names,
collect. Failures name the group, method and rank (see results.py).

verl's direct calls: `execute_all` / `execute_all_async` return one ObjectRef per rank,
`execute_all_sync` the results; `execute_rank_zero` / `execute_rank_zero_async` one ObjectRef,
`execute_rank_zero_sync` the result. The all-rank forms split list arguments across ranks when
every argument is a list of world-size entries, else send every argument to every rank.
"""

from __future__ import annotations

import functools
import types
import uuid
from typing import Any, Optional

from rlsys.protocol import DataProtoFuture
from rlsys.single_controller.decorator import (
    AUTO_PAD_MODES, PADDING_SIZE_KEY, PROTO_INPUT_MODES, Dispatch, Execute, dispatch_one_to_all,
    prepare_proto_args, registered_methods, resolve_dispatch_mode, splits_across_ranks, unpad_output,
)
from rlsys.single_controller.nodes import forget_group, register_group
from rlsys.single_controller.resource_pool import RayResourcePool
from rlsys.single_controller.results import get_by_rank
from rlsys.single_controller.worker import Worker

_RESERVED_OPTIONS = ("name", "scheduling_strategy", "placement_group", "placement_group_bundle_index")
# Set by the group for every rank; a user's env var of the same name is an error, never an override.
PROTECTED_ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RAY_LOCAL_RANK",
                      "RAY_LOCAL_WORLD_SIZE", "WG_PREFIX", "WG_BACKEND")


def check_env_clash(env_vars: dict, where: str) -> None:
    clash = sorted(set(env_vars or {}) & set(PROTECTED_ENV_VARS))
    if clash:
        raise ValueError(f"{where}: env vars {clash} are set by the worker group for each rank and cannot be overridden")


class RayClassWithInitArgs:
    """A Worker class (plain or `ray.remote`-decorated), its constructor args and Ray actor options."""

    def __init__(self, cls, *args, **kwargs):
        from ray.actor import ActorClass

        if isinstance(cls, RayClassWithInitArgs):  # e.g. RayClassWithInitArgs(create_colocated_worker_cls(...))
            if args or kwargs:
                raise ValueError("RayClassWithInitArgs: wrapping a RayClassWithInitArgs takes no more init args")
            self.remote_cls, self.cls, self.args, self.kwargs = cls.remote_cls, cls.cls, cls.args, cls.kwargs
            self.options = dict(cls.options)
            return
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
        check_env_clash((options.get("runtime_env") or {}).get("env_vars"), "update_options runtime_env")
        self.options.update(options)
        return self

    def actor_class(self):
        import ray

        return self.remote_cls if self.remote_cls is not None else ray.remote(self.cls)


class _GroupDataProtoFuture(DataProtoFuture):
    """A DataProtoFuture whose get() reports failures like a blocking call (rank named)."""

    def __init__(self, collect_fn, futures, ranks, where, timeout_s, rank_nodes=None):
        super().__init__(collect_fn=collect_fn, futures=futures)
        self._ranks, self._where, self._timeout_s, self._rank_nodes = ranks, where, timeout_s, rank_nodes

    def get(self, timeout: Optional[float] = None) -> Any:
        outputs = get_by_rank(self.futures, self._ranks, self._where, timeout if timeout is not None else self._timeout_s,
                              rank_nodes=self._rank_nodes)
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
    rank_nodes: Optional[list] = None  # RankNode per rank (pool-made groups): failures name a dead node

    def __init__(self, resource_pool: Optional[RayResourcePool] = None,
                 ray_cls_with_init: Optional[RayClassWithInitArgs] = None, name_prefix: Optional[str] = None,
                 call_timeout_s: Optional[float] = None, create_timeout_s: float = 300.0, *,
                 detached: bool = False, worker_names: Optional[list] = None, worker_handles: Optional[list] = None,
                 device_name: str = "cuda", worker_env: Optional[dict] = None,
                 ray_wait_register_center_timeout: Optional[float] = None, bin_pack: bool = True):
        """`call_timeout_s` bounds every blocking call (None: wait as long as the ranks run);
        `create_timeout_s` (verl: `ray_wait_register_center_timeout`) bounds actor start-up.
        `worker_env` adds env vars to every rank; `detached` makes the actors outlive the driver
        (give the pool `detached=True` too); `worker_names`/`worker_handles` attach to running
        actors instead (see `from_detached`). `device_name` is "cuda" or "cpu"; `bin_pack=False`
        is not supported (pools are STRICT_PACK per node)."""
        if device_name not in ("cuda", "cpu"):
            raise ValueError(f"RayWorkerGroup: device_name={device_name!r} is not supported (use 'cuda' or 'cpu')")
        if not bin_pack:
            raise ValueError("RayWorkerGroup: bin_pack=False is not supported; pools place STRICT_PACK per node")
        check_env_clash(worker_env, "RayWorkerGroup worker_env")
        self.resource_pool, self.ray_cls_with_init = resource_pool, ray_cls_with_init
        self.device_name, self.worker_env, self.detached = device_name, dict(worker_env or {}), detached
        if ray_wait_register_center_timeout is not None:
            create_timeout_s = ray_wait_register_center_timeout
        bind_cls = ray_cls_with_init.cls if ray_cls_with_init is not None else Worker
        if worker_names is not None or worker_handles is not None:
            import ray

            workers = list(worker_handles) if worker_handles else [ray.get_actor(n) for n in worker_names]
            self._worker_names = list(worker_names) if worker_names else [None] * len(workers)
            self._pool_claim = None
            self._setup(workers, bind_cls, name_prefix or "detached", "", call_timeout_s)
            return
        if resource_pool is None or ray_cls_with_init is None:
            raise ValueError("RayWorkerGroup needs a resource_pool and a ray_cls_with_init (or worker_names)")
        prefix = name_prefix or f"{resource_pool.name_prefix}_{ray_cls_with_init.cls.__name__}_{uuid.uuid4().hex[:6]}"
        resource_pool.claim(prefix)
        self._pool_claim = prefix
        try:
            workers = self._create_workers(prefix, create_timeout_s)
        except BaseException:
            resource_pool.release(prefix)
            raise
        self.rank_nodes = resource_pool.rank_nodes()
        register_group(prefix, self.rank_nodes)  # a node's death then names this group's ranks too
        self._setup(workers, bind_cls, prefix, "", call_timeout_s)

    @classmethod
    def from_detached(cls, name_prefix: Optional[str] = None, worker_names: Optional[list] = None,
                      worker_handles: Optional[list] = None,
                      ray_cls_with_init: Optional[RayClassWithInitArgs] = None, **kwargs) -> "RayWorkerGroup":
        """A group over actors that already run (e.g. made with detached=True by another driver),
        found by `worker_names` (rank order) or given as `worker_handles`; binds
        `ray_cls_with_init.cls`'s methods."""
        if not worker_names and not worker_handles:
            raise ValueError("from_detached needs worker_names or worker_handles")
        return cls(None, ray_cls_with_init, name_prefix, worker_names=worker_names,
                   worker_handles=worker_handles, **kwargs)

    def _setup(self, workers: list, bind_cls: type, name_prefix: str, method_prefix: str,
               call_timeout_s: Optional[float]) -> None:
        self.workers = workers
        self.name_prefix = name_prefix
        self.call_timeout_s = call_timeout_s
        self._method_prefix = method_prefix
        self._dispatch_info, self._collect_info = {}, {}  # mesh name -> per-rank dp rank / collect flag
        for name, attrs in registered_methods(bind_cls).items():
            if hasattr(RayWorkerGroup, name):
                raise ValueError(f"worker method {bind_cls.__name__}.{name} shadows a RayWorkerGroup attribute")
            setattr(self, name, types.MethodType(_group_method(name, attrs, getattr(bind_cls, name)), self))

    @property
    def world_size(self) -> int:
        return len(self.workers)

    @property
    def worker_names(self) -> list:
        """Ray actor names in rank order (`ray.get_actor(name)` finds each)."""
        return list(self._worker_names)

    # ---- actor creation -----------------------------------------------------------------
    def _actor_options(self, pg, local_rank: int, rank: int, env: dict) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        user = dict(self.ray_cls_with_init.options)
        runtime_env = dict(user.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **self.worker_env, **env}
        options = {**self.resource_pool.actor_resources(), **user, "runtime_env": runtime_env,
                   "name": f"{self.name_prefix}_rank_{rank}",
                   "scheduling_strategy": PlacementGroupSchedulingStrategy(
                       pg, placement_group_bundle_index=local_rank)}
        if self.detached:
            options["lifetime"] = "detached"
        return options

    def _create_workers(self, name_prefix: str, timeout_s: float) -> list:
        import ray

        self.name_prefix = name_prefix
        spec, remote_cls = self.ray_cls_with_init, self.ray_cls_with_init.actor_class()
        check_env_clash((spec.options.get("runtime_env") or {}).get("env_vars"), "ray_cls_with_init runtime_env")
        where = f"worker group {name_prefix!r}, method '__init__'"
        workers: list = []
        self._worker_names = []
        master_env: dict = {"MASTER_ADDR": "", "MASTER_PORT": ""}  # rank 0 fills these in
        try:
            for pg in self.resource_pool.get_placement_groups():
                for local_rank in range(pg.bundle_count):
                    rank = len(workers)
                    env = {"WORLD_SIZE": str(self.resource_pool.world_size), "RANK": str(rank),
                           "LOCAL_RANK": str(local_rank), "RAY_LOCAL_RANK": str(local_rank),
                           "RAY_LOCAL_WORLD_SIZE": str(pg.bundle_count), "WG_PREFIX": name_prefix,
                           "WG_BACKEND": "ray", **master_env}
                    options = self._actor_options(pg, local_rank, rank, env)
                    workers.append(remote_cls.options(**options).remote(*spec.args, **spec.kwargs))
                    self._worker_names.append(options["name"])
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
            if mode is Dispatch.ALL_TO_ALL and execute_mode is Execute.RANK_ZERO:
                dispatch_fn = dispatch_one_to_all  # verl: rank 0 gets the arguments as given
            per_rank_args, per_rank_kwargs = dispatch_fn(self, *args, **kwargs)
            padded_by_dispatch = PADDING_SIZE_KEY in per_rank_kwargs
            if padded_by_dispatch:
                per_rank_kwargs = dict(per_rank_kwargs)
                pad_size = int(per_rank_kwargs.pop(PADDING_SIZE_KEY))
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
            if (mode in AUTO_PAD_MODES or padded_by_dispatch) and execute_mode is Execute.ALL:
                return _GroupDataProtoFuture(collect, refs, ranks, where, self.call_timeout_s, self.rank_nodes)
            return refs
        return collect(get_by_rank(refs, ranks, where, self.call_timeout_s, rank_nodes=self.rank_nodes))

    @staticmethod
    def _check_per_rank(where: str, ranks: list[int], per_rank_args, per_rank_kwargs) -> None:
        for key, value in list(enumerate(per_rank_args)) + list(per_rank_kwargs.items()):
            if not isinstance(value, (list, tuple)) or len(value) <= max(ranks):
                raise ValueError(f"{where}: the dispatch function must give argument {key!r} as a list "
                                 f"with an entry for each of ranks {ranks}, got {value!r:.80}")

    def _where(self, method_name: str) -> str:
        return f"worker group {self.name_prefix!r}, method {method_name!r}"

    def _remote(self, rank: int, method_name: str, *args, **kwargs):
        return getattr(self.workers[rank], self._method_prefix + method_name).remote(*args, **kwargs)

    def execute_all_async(self, method_name: str, *args, **kwargs) -> list:
        """Call `method_name` on every rank; one ObjectRef per rank. Split like ALL_TO_ALL: entry r of
        each argument to rank r if every argument is a list of world-size entries, else all to all."""
        n = self.world_size
        if splits_across_ranks(n, args, kwargs):
            return [self._remote(r, method_name, *[a[r] for a in args], **{k: v[r] for k, v in kwargs.items()})
                    for r in range(n)]
        return [self._remote(r, method_name, *args, **kwargs) for r in range(n)]

    def execute_all(self, method_name: str, *args, **kwargs) -> list:
        """verl's alias of `execute_all_async`: ObjectRefs, not results (use `execute_all_sync`)."""
        return self.execute_all_async(method_name, *args, **kwargs)

    def execute_all_sync(self, method_name: str, *args, **kwargs) -> list:
        """`execute_all_async`, waited for: the results in rank order (failures name the rank)."""
        refs = self.execute_all_async(method_name, *args, **kwargs)
        return get_by_rank(refs, list(range(self.world_size)), self._where(method_name), self.call_timeout_s,
                           rank_nodes=self.rank_nodes)

    def wait_refs(self, refs: list, method_name: str, timeout_s: Optional[float] = None) -> list:
        """The outputs of a non-blocking call's refs (one per rank, rank order), reported like a
        blocking call: failures name this group, `method_name` and the rank (or a dead node)."""
        return get_by_rank(refs, list(range(len(refs))), self._where(method_name),
                           self.call_timeout_s if timeout_s is None else timeout_s, rank_nodes=self.rank_nodes)

    def execute_rank_zero_async(self, method_name: str, *args, **kwargs):
        """Call `method_name` on rank 0 with the arguments as given; one ObjectRef."""
        return self._remote(0, method_name, *args, **kwargs)

    def execute_rank_zero(self, method_name: str, *args, **kwargs):
        """verl's alias of `execute_rank_zero_async`: an ObjectRef (use `execute_rank_zero_sync`)."""
        return self.execute_rank_zero_async(method_name, *args, **kwargs)

    def execute_rank_zero_sync(self, method_name: str, *args, **kwargs) -> Any:
        ref = self.execute_rank_zero_async(method_name, *args, **kwargs)
        return get_by_rank([ref], [0], self._where(method_name), self.call_timeout_s, rank_nodes=self.rank_nodes)[0]

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
            view.device_name, view.worker_env, view.detached = self.device_name, self.worker_env, self.detached
            view._worker_names, view._pool_claim = self._worker_names, self._pool_claim
            view.rank_nodes = self.rank_nodes
            view._setup(self.workers, role_classes[role], f"{self.name_prefix}.{role}", f"{role}_",
                        self.call_timeout_s)
            views[role] = view
        return views

    def shutdown(self) -> None:
        """Kill this group's actors (views of a WorkerDict share them: one shutdown ends all)."""
        self._kill(self.workers)
        self.workers = []
        forget_group(self.name_prefix)
        if self.resource_pool is not None and self._pool_claim is not None:
            self.resource_pool.release(self._pool_claim)

    @staticmethod
    def _kill(workers: list) -> None:
        import ray

        for worker in workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
