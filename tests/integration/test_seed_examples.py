"""Seed 003 ("Ray prerequisites") examples, run with rlsys on a local CPU Ray cluster.

verl section: a colocated Actor `add` / Critic `sub` on two ranks. DP_COMPUTE_PROTO chunks the
10 zero rows over the ranks (5 each); each Actor rank adds its rank, so the rows come back as
[0]*5 + [1]*5; each Critic rank subtracts config['b'] = 10, so they come back as [-10]*10. The
same roles as two separate groups must give the same outputs as the spawned WorkerDict views.

Native-Ray section: two groups of two workers, each running one gloo DDP step on its own model
replica set. The seed carves one 4-bundle placement group into bundles 0-1 and 2-3 by hand; our
RayWorkerGroup always takes every bundle of its pool (bundle index = local rank), so the honest
equivalent here is two 2-bundle pools, one per group: the same disjoint halves, reserved as two
placement groups. The workers are our Worker subclasses driven through RayWorkerGroup. Checked:
ranks of a group hold identical gradients after the DDP all-reduce (and they equal the mean of the
per-rank gradients computed on the driver, which differ from each other), while the two groups,
with different init seeds and data, hold different gradients.
"""

from __future__ import annotations

import pytest
import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import (
    RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, create_colocated_worker_cls,
)
from tests.integration.seed_workers import DDPWorker, SeedActor, SeedCritic, build_model, sample_grad

pytestmark = pytest.mark.slow

ACTOR_OUT = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
CRITIC_OUT = [-10] * 10


def _pool(name: str, n: int = 2) -> RayResourcePool:
    return RayResourcePool([n], use_gpu=False, name_prefix=name, num_cpus_per_worker=0.25)


def _teardown(*groups: RayWorkerGroup) -> None:
    for wg in groups:
        wg.shutdown()
        wg.resource_pool.remove_placement_groups()


def _seed_specs() -> dict:
    return {"actor": RayClassWithInitArgs(cls=SeedActor),
            "critic": RayClassWithInitArgs(cls=SeedCritic, config={"b": 10})}


def test_colocated_actor_critic_matches_seed_and_separate_groups(ray_local):
    data = DataProto.from_dict({"a": torch.zeros(10)})

    worker_dict = create_colocated_worker_cls(_seed_specs())
    wg_dict = RayWorkerGroup(resource_pool=_pool("seed_coloc"), ray_cls_with_init=RayClassWithInitArgs(cls=worker_dict),
                             name_prefix="seed_coloc")
    spawn_wg = wg_dict.spawn(prefix_set=_seed_specs().keys())
    coloc_actor = spawn_wg["actor"].add(data)
    coloc_critic = spawn_wg["critic"].sub(data)
    assert coloc_actor.batch["a"].tolist() == ACTOR_OUT
    assert coloc_critic.batch["a"].tolist() == CRITIC_OUT
    assert spawn_wg["actor"].workers is spawn_wg["critic"].workers is wg_dict.workers  # one process per rank

    specs = _seed_specs()
    actor_wg = RayWorkerGroup(_pool("seed_actor"), specs["actor"], name_prefix="seed_actor")
    critic_wg = RayWorkerGroup(_pool("seed_critic"), specs["critic"], name_prefix="seed_critic")
    sep_actor, sep_critic = actor_wg.add(data), critic_wg.sub(data)
    assert torch.equal(sep_actor.batch["a"], coloc_actor.batch["a"])
    assert torch.equal(sep_critic.batch["a"], coloc_critic.batch["a"])
    assert data.batch["a"].tolist() == [0.0] * 10  # the driver's batch is not changed by the workers
    _teardown(wg_dict, actor_wg, critic_wg)


def _reference_grads(seed: int, x: torch.Tensor) -> tuple[str, list[torch.Tensor]]:
    """Per-rank gradients of loss = model(chunk).sum(), computed on the driver without DDP."""
    grads, name = [], None
    for chunk in x.chunk(2):
        model = build_model(seed)
        model(chunk).sum().backward()
        name, grad = sample_grad(model)
        grads.append(grad)
    return name, grads


@pytest.fixture()
def ddp_groups(ray_local):
    groups = {}
    try:
        for name, seed in (("ddp_group_a", 1), ("ddp_group_b", 2)):
            groups[name] = RayWorkerGroup(_pool(name), RayClassWithInitArgs(DDPWorker, seed=seed), name_prefix=name)
        yield groups
    finally:
        _teardown(*groups.values())


def test_two_ddp_groups_on_separate_bundles(ddp_groups):
    infos = {name: wg.init_dist() for name, wg in ddp_groups.items()}
    for name, wg in ddp_groups.items():
        assert [i["rank"] for i in infos[name]] == [0, 1] and all(i["world_size"] == 2 for i in infos[name])
        assert len({i["master"] for i in infos[name]}) == 1
        assert {i["pg_id"] for i in infos[name]} == {wg.resource_pool.get_placement_groups()[0].id.hex()}
    a, b = infos["ddp_group_a"], infos["ddp_group_b"]
    assert a[0]["master"] != b[0]["master"]  # each group has its own rendezvous
    assert {i["pid"] for i in a}.isdisjoint(i["pid"] for i in b)

    gen = torch.Generator().manual_seed(0)
    batches = {"ddp_group_a": torch.randn(4, 8, 16, generator=gen),
               "ddp_group_b": torch.randn(4, 8, 16, generator=gen)}
    sampled = {}
    for (name, wg), seed in zip(ddp_groups.items(), (1, 2)):
        losses = wg.train_step(DataProto.from_dict({"x": batches[name]}))
        assert len(losses) == 4
        grads = wg.sample_grads()
        assert grads[0][0] == grads[1][0]
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)  # all ranks agree after all-reduce
        ref_name, per_rank = _reference_grads(seed, batches[name])
        assert not torch.allclose(per_rank[0], per_rank[1])  # the ranks saw different data
        assert grads[0][0] == ref_name
        assert torch.allclose(grads[0][1], (per_rank[0] + per_rank[1]) / 2, atol=1e-5)  # DDP averages
        sampled[name] = grads[0][1]
    assert not torch.allclose(sampled["ddp_group_a"], sampled["ddp_group_b"])  # groups are independent
