"""A verl user's controller code on rlsys (issue 12): only the imports are changed.

Real worker classes (verl_style_workers.py) on the session's local CPU Ray; every test checks
the values a verl user relies on. Groups ask 0.25 CPU per worker, so 4 fit on 2 cores.
"""

import os
import time

import pytest
import ray
import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import (
    DISPATCH_MODE_FN_REGISTRY, Dispatch, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup,
    ResourcePoolExhaustedError, collect_all_to_all, create_colocated_worker_cls, update_dispatch_mode,
)
from tests.integration import verl_style_workers as vw
from tests.integration.workers_for_tests import CounterWorker, EchoWorker


def pool(name, n=4, **kwargs):
    return RayResourcePool([n], use_gpu=False, name_prefix=name, num_cpus_per_worker=0.25, **kwargs)


def teardown(*groups):
    for wg in groups:
        wg.shutdown()
        if wg.resource_pool is not None:
            wg.resource_pool.remove_placement_groups()


@pytest.fixture(scope="module")
def metrics_wg(ray_local):
    wg = RayWorkerGroup(pool("verl_metrics"), RayClassWithInitArgs(cls=vw.MetricsWorker), name_prefix="verl_metrics",
                        device_name="cpu", worker_env={"MY_FLAG": "on"}, ray_wait_register_center_timeout=120)
    yield wg
    teardown(wg)


def test_dp_compute_proto_merges_every_ranks_metrics(metrics_wg):
    data = DataProto.from_dict({"x": torch.arange(8)}, meta_info={"step": 3})
    out = metrics_wg.update(data)
    assert out.batch["y"].tolist() == [2 * i for i in range(8)]
    assert out.meta_info["metrics"] == {"loss": [0.0, 1.0, 2.0, 3.0], "rows": [2, 2, 2, 2]}
    assert float(out.meta_info["metrics"]["loss"]) == 1.5  # code that logged one number logs the mean
    assert out.meta_info["step"] == 3
    with pytest.raises(AssertionError, match="Conflicting values for meta_info key 'who'"):
        metrics_wg.update_conflicting(data)


def test_all_to_all_sends_non_lists_to_every_rank_and_splits_world_size_lists(metrics_wg):
    assert metrics_wg.scale(7) == [(7, 1, r) for r in range(4)]
    assert metrics_wg.scale([1, 2, 3, 4], factor=[5, 6, 7, 8]) == [(1, 5, 0), (2, 6, 1), (3, 7, 2), (4, 8, 3)]
    assert metrics_wg.scale([1, 2, 3], factor=2) == [([1, 2, 3], 2, r) for r in range(4)]
    assert collect_all_to_all(metrics_wg, [1, 2]) == [1, 2]


def test_execute_names_and_sync_async_semantics(metrics_wg):
    refs = metrics_wg.execute_all("getenv", "RANK")
    assert all(isinstance(r, ray.ObjectRef) for r in refs) and ray.get(refs) == ["0", "1", "2", "3"]
    assert metrics_wg.execute_all_sync("getenv", "MY_FLAG") == ["on"] * 4
    split = metrics_wg.execute_all_async("getenv", ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MY_FLAG"])
    assert ray.get(split) == ["0", "4", "2", "on"]
    ref = metrics_wg.execute_rank_zero("getenv", "RANK")
    assert isinstance(ref, ray.ObjectRef) and ray.get(ref) == "0"
    assert ray.get(metrics_wg.execute_rank_zero_async("getenv", "WORLD_SIZE")) == "4"
    assert metrics_wg.execute_rank_zero_sync("getenv", "RANK") == "0"


def test_verl_env_vars_worker_names_and_rank_zero_functions(metrics_wg):
    assert metrics_wg.execute_all_sync("getenv", "RAY_LOCAL_WORLD_SIZE") == ["4"] * 4
    assert metrics_wg.execute_all_sync("getenv", "RAY_LOCAL_RANK") == ["0", "1", "2", "3"]
    assert metrics_wg.execute_all_sync("getenv", "WG_PREFIX") == ["verl_metrics"] * 4
    pids = metrics_wg.execute_all_sync("pid")
    assert [ray.get(ray.get_actor(n).pid.remote()) for n in metrics_wg.worker_names] == pids
    assert metrics_wg.execute_func_rank_zero(vw.add_and_report_pid, 2, b=3) == (5, pids[0])
    out = metrics_wg.execute_with_func_generator(vw.tag_with_rank, DataProto.from_dict({"x": torch.arange(6)}))
    assert out.batch["x"].tolist() == list(range(6)) and out.batch["rank"].tolist() == [0, 0, 1, 1, 2, 2]  # padded to 8


def test_registered_and_updated_dispatch_modes(metrics_wg):
    mode = Dispatch.SUM_OF_RANK_MULTIPLES
    assert DISPATCH_MODE_FN_REGISTRY[mode]["collect_fn"] is vw._collect_sum
    assert metrics_wg.echo_value(10) == 0 + 10 + 20 + 30
    try:
        update_dispatch_mode(mode, vw._dispatch_rank_times, lambda wg, outputs: max(outputs))
        assert metrics_wg.echo_value(10) == 30
    finally:
        update_dispatch_mode(mode, vw._dispatch_rank_times, vw._collect_sum)


def test_env_clashes_are_errors(ray_local):
    spec = RayClassWithInitArgs(cls=vw.MetricsWorker)
    with pytest.raises(ValueError, match=r"\['RANK'\] are set by the worker group"):
        spec.update_options({"runtime_env": {"env_vars": {"RANK": "7", "OK": "1"}}})
    with pytest.raises(ValueError, match=r"\['WORLD_SIZE'\] are set by the worker group"):
        RayWorkerGroup(pool("verl_clash"), spec, worker_env={"WORLD_SIZE": "100"})


def test_second_group_on_taken_bundles_fails_at_once_naming_pool(ray_local):
    shared = pool("verl_full", n=2)
    first = RayWorkerGroup(shared, RayClassWithInitArgs(CounterWorker, start=0), name_prefix="verl_full_a")
    start = time.monotonic()
    with pytest.raises(ResourcePoolExhaustedError) as info:
        RayWorkerGroup(shared, RayClassWithInitArgs(CounterWorker, start=10), name_prefix="verl_full_b")
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    for part in ("'verl_full'", "'verl_full_b' asks for 2 bundles", "0 of 2 bundles are free", "['verl_full_a']",
                 "max_colocate_count=1"):
        assert part in message
    assert first.bump() == [1, 1]  # the first group is untouched
    first.shutdown()
    again = RayWorkerGroup(shared, RayClassWithInitArgs(CounterWorker, start=20), name_prefix="verl_full_c")
    assert again.bump() == [21, 21]  # bundles freed by shutdown can be used again
    teardown(again)


def test_mesh_dispatch_gives_each_dp_slice_to_its_ranks(ray_local):
    wg = RayWorkerGroup(pool("verl_mesh"), RayClassWithInitArgs(cls=vw.MeshWorker), name_prefix="verl_mesh")
    out = wg.compute(DataProto.from_dict({"x": torch.arange(6)}))
    assert out.batch["x"].tolist() == list(range(6))
    assert out.batch["rank"].tolist() == [0, 0, 0, 2, 2, 2]  # dp slice 0 from rank 0, slice 1 from rank 2
    assert wg._dispatch_info == {"actor": [0, 0, 1, 1]} and wg._collect_info == {"actor": [True, False, True, False]}
    assert wg._query_dispatch_info("actor") == [0, 0, 1, 1]
    assert wg._query_collect_info("actor") == [True, False, True, False]
    odd = wg.compute(DataProto.from_dict({"x": torch.arange(5)}))  # padded to 6, padding stripped
    assert odd.batch["x"].tolist() == list(range(5)) and odd.batch["rank"].tolist() == [0, 0, 0, 2, 2]
    teardown(wg)


def test_colocated_spec_goes_straight_into_a_group_and_detached_groups_reattach(ray_local):
    spec = create_colocated_worker_cls({"echo": RayClassWithInitArgs(EchoWorker, offset=1),
                                        "counter": RayClassWithInitArgs(CounterWorker, start=41)})
    assert isinstance(spec, RayClassWithInitArgs)
    wg = RayWorkerGroup(pool("verl_coloc", n=2), spec, name_prefix="verl_coloc")
    views = wg.spawn(prefix_set={"echo", "counter"})
    assert views["counter"].bump() == [42, 42] and views["echo"].add(5) == [6, 7]
    teardown(wg)

    detached_pool = pool("verl_detached", n=2, detached=True)
    owner = RayWorkerGroup(detached_pool, RayClassWithInitArgs(CounterWorker, start=0), name_prefix="verl_det",
                           detached=True)
    assert owner.bump() == [1, 1]
    attached = RayWorkerGroup.from_detached(worker_names=owner.worker_names,
                                            ray_cls_with_init=RayClassWithInitArgs(CounterWorker))
    assert attached.bump() == [2, 2]  # the same actors, state and all
    assert attached.worker_names == owner.worker_names == ["verl_det_rank_0", "verl_det_rank_1"]
    teardown(owner)


def test_padded_rows_count_in_the_ranks_metrics(metrics_wg):
    out = metrics_wg.update(DataProto.from_dict({"x": torch.arange(5)}, meta_info={"step": 0}))
    assert out.batch["y"].tolist() == [0, 2, 4, 6, 8]  # padded 5 -> 8 rows for the ranks, stripped after
    assert out.meta_info["metrics"]["rows"] == [2, 2, 2, 2]
    assert os.environ.get("MY_FLAG") is None  # worker_env reaches the workers, not the driver
