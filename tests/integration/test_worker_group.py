"""The single controller on a local CPU Ray cluster: dispatch modes, errors, colocation, placement.

Workers ask for fractional CPUs (0.25 each), so groups of 4 fit on a 2-core machine.
"""

import os
import signal
import time

import numpy as np
import pytest
import ray
import torch

from rlsys.protocol import DataProto, DataProtoFuture
from rlsys.single_controller import (
    RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, WorkerDiedError, create_colocated_worker_cls,
)
from tests.integration.workers_for_tests import CounterWorker, EchoWorker, FailingInitWorker


def make_group(name, n=4, cls=EchoWorker, **init_kwargs):
    pool = RayResourcePool([n], use_gpu=False, name_prefix=name, num_cpus_per_worker=0.25)
    return RayWorkerGroup(pool, RayClassWithInitArgs(cls, **init_kwargs), name_prefix=name)


def teardown(*groups):
    for wg in groups:
        wg.shutdown()
        wg.resource_pool.remove_placement_groups()


def actor_is_gone(name, wait_s=60.0):
    """ray.kill is asynchronous: wait (bounded) until the name is released."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return True
        time.sleep(0.2)
    return False


def proto(n):
    return DataProto.from_dict({"x": torch.arange(n)}, {"uid": np.array([f"u{i}" for i in range(n)], dtype=object)})


@pytest.fixture(scope="module")
def echo_wg(ray_local):
    wg = make_group("echo", 4, offset=100)
    yield wg
    teardown(wg)


def test_ranks_env_and_actor_names(echo_wg):
    infos = echo_wg.whoami("t")
    assert [i["rank"] for i in infos] == [0, 1, 2, 3]
    assert [i["local_rank"] for i in infos] == [0, 1, 2, 3]
    assert all(i["world_size"] == 4 and i["tag"] == "t" for i in infos)
    assert len({i["master"] for i in infos}) == 1  # one rendezvous address for the whole group
    assert len({i["pid"] for i in infos}) == 4
    for rank, info in enumerate(infos):
        assert ray.get(ray.get_actor(f"echo_rank_{rank}").pid.remote()) == info["pid"]


def test_simple_dispatch_modes(echo_wg):
    assert echo_wg.world_size == 4 and len(echo_wg.workers) == 4
    assert echo_wg.add([1, 2, 3, 4]) == [101, 103, 105, 107]
    assert echo_wg.add([0] * 4, y=[10, 20, 30, 40]) == [110, 121, 132, 143]
    assert echo_wg.only_zero("a") == (0, "a")
    assert echo_wg.exec_zero() == 0
    assert echo_wg.dp([1, 2, 3, 4]) == [2, 5, 8, 11]
    assert echo_wg.custom(1) == 4 * 10 + (0 + 1 + 2 + 3)
    assert echo_wg.slow_async(5) == [5, 6, 7, 8]


def test_group_methods_are_bound_with_worker_docs(echo_wg):
    assert echo_wg.tag_rows.__name__ == "tag_rows"
    assert "rank that computed" in echo_wg.tag_rows.__doc__
    assert not hasattr(echo_wg, "unregistered_rank")


def test_direct_execute_helpers(echo_wg):
    # verl's names: execute_all / execute_rank_zero are the async forms (ObjectRefs)
    assert ray.get(echo_wg.execute_all_async("unregistered_rank", plus=1)) == [1, 2, 3, 4]
    assert ray.get(echo_wg.execute_all("unregistered_rank")) == [0, 1, 2, 3]
    assert echo_wg.execute_all_sync("unregistered_rank", plus=[10, 20, 30, 40]) == [10, 21, 32, 43]
    assert ray.get(echo_wg.execute_rank_zero("unregistered_rank", 5)) == 5
    assert echo_wg.execute_rank_zero_sync("unregistered_rank", 5) == 5


def test_wrong_arguments_fail_before_sending(echo_wg):
    before = echo_wg.num_calls("dp")
    with pytest.raises(ValueError, match=r"'echo', method 'dp' \(Dispatch.DP_COMPUTE\): argument 0 .*4 ranks.*length 3"):
        echo_wg.dp([1, 2, 3])
    assert echo_wg.num_calls("dp") == before
    with pytest.raises(ValueError, match=r"method 'tag_rows'.*argument 0 must be a DataProto"):
        echo_wg.tag_rows([1, 2])
    with pytest.raises(ValueError, match=r"method 'metric'.*10 rows, not divisible by the 4 ranks"):
        echo_wg.metric(proto(10))


def test_dp_compute_proto_pads_and_keeps_order(echo_wg):
    out = echo_wg.tag_rows(proto(10))
    assert len(out) == 10
    assert out.batch["x"].tolist() == list(range(1, 11))
    assert list(out.non_tensor_batch["uid"]) == [f"u{i}" for i in range(10)]
    assert out.batch["rank"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # padded to 12: 3 rows per rank


def test_non_blocking_calls(echo_wg):
    fut = echo_wg.tag_rows_async(proto(6))
    assert isinstance(fut, DataProtoFuture)
    out = fut.get()
    assert out.batch["x"].tolist() == list(range(1, 7))
    assert out.batch["rank"].tolist() == [0, 0, 1, 1, 2, 2]  # padded to 8: rank 3 got only the 2 pad rows
    chained = echo_wg.tag_rows(echo_wg.tag_rows_async(proto(6)))  # a future is a valid input
    assert chained.batch["x"].tolist() == list(range(2, 8))
    refs = echo_wg.rank_async()
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2, 3]


def test_with_func_and_metric(echo_wg):
    out = echo_wg.apply(lambda x: x * 3, proto(7))
    assert out.batch["x"].tolist() == [3 * i for i in range(7)]
    assert echo_wg.metric(proto(8)) == [{"rows": 2, "rank": r} for r in range(4)]


def test_worker_exception_keeps_type_and_names_rank(echo_wg):
    with pytest.raises(KeyError, match=r"worker group 'echo', method 'fail_on', rank 2.*boom on 2") as info:
        echo_wg.fail_on([-1, -1, 2, -1])
    assert "workers_for_tests.py" in str(info.value.__cause__)  # Ray's error, with the remote traceback
    fut = echo_wg.fail_proto_async(proto(4))
    with pytest.raises(ZeroDivisionError, match=r"method 'fail_proto_async', rank 1.*proto boom"):
        fut.get()
    assert echo_wg.add([0, 0, 0, 0]) == [100, 101, 102, 103]  # the group still works


@pytest.mark.parametrize("how", ["sigkill", "ray_kill"])
def test_killed_worker_fails_next_call_naming_rank(ray_local, how):
    wg = make_group(f"victim_{how}", 2)
    if how == "sigkill":
        os.kill(wg.pid()[1], signal.SIGKILL)
    else:
        ray.kill(wg.workers[1], no_restart=True)
    with pytest.raises(WorkerDiedError, match=rf"'victim_{how}', method 'whoami', rank 1"):
        wg.whoami("after-kill")
    teardown(wg)


def test_dead_rank_reported_while_peer_blocks(ray_local):
    wg = make_group("exit_while_hang", 2)
    with pytest.raises(WorkerDiedError, match=r"method 'act', rank 1"):
        wg.act(["hang", "exit"])  # rank 0 never returns; rank 1's death must still surface
    teardown(wg)


def test_call_timeout_names_ranks(ray_local):
    wg = make_group("timeout", 2)
    wg.call_timeout_s = 1.0
    with pytest.raises(TimeoutError, match=r"method 'act'.*ranks \[1\] gave no result"):
        wg.act(["ok", "hang"])
    teardown(wg)


def test_constructor_failure_names_rank(ray_local):
    pool = RayResourcePool([2], use_gpu=False, name_prefix="bad_init", num_cpus_per_worker=0.25)
    with pytest.raises(WorkerDiedError, match=r"'bad_init', method '__init__', rank 1.*init failed on rank 1"):
        RayWorkerGroup(pool, RayClassWithInitArgs(FailingInitWorker, bad_rank=1), name_prefix="bad_init")
    assert actor_is_gone("bad_init_rank_0")  # the ranks that did start were killed
    pool.remove_placement_groups()


def test_unsatisfiable_pool_raises_naming_resources(ray_local):
    pool = RayResourcePool([1], use_gpu=True, name_prefix="no_gpu", pg_timeout_s=1)
    with pytest.raises(RuntimeError, match=r"'no_gpu'.*\{'CPU': 1, 'GPU': 1\}"):
        pool.get_placement_groups()


def test_actor_options_env_vars_reach_workers(ray_local):
    pool = RayResourcePool([2], use_gpu=False, name_prefix="opts", num_cpus_per_worker=0.25)
    # the group's own per-rank variables cannot be overridden: a clash fails at once, naming them (as verl)
    with pytest.raises(ValueError, match=r"\['MASTER_ADDR', 'RANK'\]"):
        RayClassWithInitArgs(EchoWorker).update_options(
            {"runtime_env": {"env_vars": {"RLSYS_TEST_FLAG": "on", "RANK": "99", "MASTER_ADDR": "203.0.113.9"}}})
    spec = RayClassWithInitArgs(EchoWorker).update_options({"runtime_env": {"env_vars": {"RLSYS_TEST_FLAG": "on"}}})
    wg = RayWorkerGroup(pool, spec, name_prefix="opts")
    assert wg.env("RLSYS_TEST_FLAG") == ["on", "on"]
    assert wg.env("RANK") == ["0", "1"]
    masters = {info["master"] for info in wg.whoami("m")}
    assert len(masters) == 1 and masters.pop()[0] != "203.0.113.9"  # rank 0 picked the address
    with pytest.raises(ValueError, match="name"):
        spec.update_options({"name": "x"})
    teardown(wg)


def test_colocated_worker_dict_shares_process(ray_local):
    worker_dict = create_colocated_worker_cls({
        "echo": RayClassWithInitArgs(EchoWorker, offset=1),
        "counter": RayClassWithInitArgs(CounterWorker, start=41),
    })
    pool = RayResourcePool([2], use_gpu=False, name_prefix="coloc", num_cpus_per_worker=0.25)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(cls=worker_dict), name_prefix="coloc")
    views = wg.spawn(prefix_set={"echo", "counter"})
    assert views["counter"].bump() == [42, 42]
    assert views["echo"].add([0, 0]) == [1, 2]
    assert views["echo"].pid() == views["counter"].pid()  # counter.pid is async: both kinds forward
    assert views["echo"].tag_rows(proto(3)).batch["x"].tolist() == [1, 2, 3]
    assert [i["rank"] for i in views["echo"].whoami("x")] == [0, 1]
    assert views["counter"].whoami() == [{"rank": 0, "world_size": 2}, {"rank": 1, "world_size": 2}]
    assert wg.counter_bump() == [43, 43]  # the WorkerDict group itself has the prefixed names
    with pytest.raises(KeyError, match=r"'coloc.echo', method 'fail_on', rank 0"):
        views["echo"].fail_on([0, -1])
    teardown(wg)


def test_max_colocate_count_lets_two_groups_share_bundles(ray_local):
    pool = RayResourcePool([2], use_gpu=False, name_prefix="shared", max_colocate_count=2, num_cpus_per_worker=0.5)
    first = RayWorkerGroup(pool, RayClassWithInitArgs(CounterWorker, start=0))
    second = RayWorkerGroup(pool, RayClassWithInitArgs(CounterWorker, start=10))
    assert first.name_prefix != second.name_prefix
    assert first.bump() == [1, 1] and second.bump() == [11, 11]
    assert set(first.pid()).isdisjoint(second.pid())
    teardown(first, second)
