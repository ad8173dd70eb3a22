"""Builds the worker groups for a run: which roles exist and where they live.

`colocate`: one resource pool; actor, rollout (and reference, critic, reward) share each
bundle as one `WorkerDict` process, so weights reach the engine through IPC handles (GPU)
or shared memory (CPU). `split`: the rollout engines get a pool of their own and weights
travel through an NCCL (GPU) or gloo (CPU) broadcast group. With `trainer.nnodes` > 1 every
pool has one placement group per node, pinned to distinct nodes in the same order for every
pool; ranks find each other by node IP (torch.distributed, weight-sync groups: docs/cluster.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rlsys.single_controller import (
    RayClassWithInitArgs,
    RayResourcePool,
    RayWorkerGroup,
    create_colocated_worker_cls,
)


@dataclass
class RoleGroups:
    actor: Any
    rollout: Any
    reward: Any
    reference: Optional[Any]
    critic: Optional[Any]
    groups: list  # the underlying RayWorkerGroups, for shutdown
    custom: dict = field(default_factory=dict)  # user roles from `roles.<name>`, by name


def check_placement(config, use_gpu: bool) -> tuple[int, int]:
    """Returns (train ranks, rollout ranks) per node; raises naming the conflicting keys."""
    t = config.trainer
    if config.placement not in ("colocate", "split"):
        raise ValueError(f"placement={config.placement!r}: expected colocate or split")
    if config.placement == "colocate":
        return t.n_devices_per_node, t.n_devices_per_node
    train = t.n_devices_per_node - t.rollout_devices_per_node if use_gpu else t.n_devices_per_node
    if train < 1 or t.rollout_devices_per_node < 1:
        raise ValueError(
            f"placement=split needs devices for both sides: trainer.n_devices_per_node={t.n_devices_per_node}, "
            f"trainer.rollout_devices_per_node={t.rollout_devices_per_node} leave {train} for training; "
            "set trainer.n_devices_per_node >= trainer.rollout_devices_per_node + 1, or placement=colocate"
        )
    return train, t.rollout_devices_per_node


def _role_classes(config, model_path: str, needs_ref: bool, needs_critic: bool) -> dict:
    from rlsys.rollout.worker import RolloutWorker
    from rlsys.workers.actor import ActorWorker
    from rlsys.workers.critic import CriticWorker
    from rlsys.workers.reference import ReferenceWorker
    from rlsys.workers.reward import RewardWorker

    classes = {"actor": ActorWorker, "rollout": RolloutWorker, "reward": RewardWorker}
    if needs_ref:
        classes["ref"] = ReferenceWorker
    if needs_critic:
        classes["critic"] = CriticWorker
    specs = {role: RayClassWithInitArgs(cls, config, model_path) for role, cls in classes.items()}
    for name, role in custom_role_specs(config).items():
        if role.placement == "colocate":
            specs[name] = RayClassWithInitArgs(import_role_class(name, role), config, model_path, **role.kwargs)
    return specs


def custom_role_specs(config) -> dict:
    from rlsys.config.schema import role_spec

    return {name: role_spec(name, value) for name, value in config.roles.items()}


def import_role_class(name: str, role) -> type:
    """Resolve `roles.<name>._target_` to a Worker subclass, failing with the key named."""
    import importlib

    from rlsys.single_controller import Worker

    if name in ("actor", "rollout", "reward", "ref", "critic"):
        raise ValueError(f"roles.{name}: the name is taken by a built-in role; choose another")
    if role.placement not in ("colocate", "own_pool"):
        raise ValueError(f"roles.{name}.placement={role.placement!r}: expected colocate or own_pool")
    module_name, _, cls_name = role._target_.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"roles.{name}._target_={role._target_!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise ValueError(f"roles.{name}._target_={role._target_!r} is not a rlsys Worker subclass")
    if not hasattr(cls, "process_rollouts"):
        raise ValueError(f"roles.{name}: {cls.__name__} has no @register-ed process_rollouts(data) method")
    return cls


def _own_pool_roles(config, model_path: str, use_gpu: bool) -> tuple[dict, list]:
    views, groups = {}, []
    for name, role in custom_role_specs(config).items():
        if role.placement != "own_pool":
            continue
        cls = import_role_class(name, role)
        pool = RayResourcePool([role.num_workers], use_gpu=use_gpu and role.use_gpu, name_prefix=f"role_{name}")
        spec = RayClassWithInitArgs(cls, config, model_path, **role.kwargs)
        wg = RayWorkerGroup(pool, spec, name_prefix=f"role_{name}", call_timeout_s=config.trainer.worker_timeout_s)
        views[name] = wg
        groups.append(wg)
    return views, groups


def _spawn(config, pool: RayResourcePool, roles: dict, prefix: str) -> tuple[dict, RayWorkerGroup]:
    worker_dict_cls = create_colocated_worker_cls(roles)
    # Threaded actors: in colocate, the actor role's weight sync calls the rollout role of
    # the same process through Ray while its own call is still running.
    spec = RayClassWithInitArgs(worker_dict_cls).update_options({"max_concurrency": 4})
    wg = RayWorkerGroup(pool, spec, name_prefix=prefix, call_timeout_s=config.trainer.worker_timeout_s)
    return wg.spawn(prefix_set=set(roles)), wg


def build_role_groups(config, model_path: str, use_gpu: bool, needs_ref: bool, needs_critic: bool) -> RoleGroups:
    train_ranks, rollout_ranks = check_placement(config, use_gpu)
    roles = _role_classes(config, model_path, needs_ref, needs_critic)
    nodes = config.trainer.nnodes
    spread = nodes > 1  # placement group i of every pool pinned to node i (rank r on node r // per-node)
    if config.placement == "colocate":
        pool = RayResourcePool([train_ranks] * nodes, use_gpu=use_gpu, name_prefix="colocate", distinct_nodes=spread)
        views, wg = _spawn(config, pool, roles, "colocate")
        groups = [wg]
    else:
        rollout_role = {"rollout": roles.pop("rollout")}
        train_pool = RayResourcePool([train_ranks] * nodes, use_gpu=use_gpu, name_prefix="train", distinct_nodes=spread)
        rollout_pool = RayResourcePool([rollout_ranks] * nodes, use_gpu=use_gpu, name_prefix="rollout",
                                       distinct_nodes=spread)
        views, train_wg = _spawn(config, train_pool, roles, "train")
        rollout_views, rollout_wg = _spawn(config, rollout_pool, rollout_role, "rollout")
        views.update(rollout_views)
        groups = [train_wg, rollout_wg]
    views["rollout"].engine_tp_size = config.rollout.tensor_parallel_size  # for dispatch_to_engines
    custom, own_groups = _own_pool_roles(config, model_path, use_gpu)
    custom.update({name: views[name] for name, role in custom_role_specs(config).items()
                   if role.placement == "colocate"})
    return RoleGroups(
        actor=views["actor"], rollout=views["rollout"], reward=views["reward"],
        reference=views.get("ref"), critic=views.get("critic"), groups=groups + own_groups, custom=custom,
    )
