"""The single controller on a local CPU Ray cluster: dispatch modes, errors, colocation."""

import os
import signal

import numpy as np
import pytest
import torch

from rlsys.protocol import DataProto, DataProtoFuture
from rlsys.single_controller import (
    RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, WorkerDiedError, create_colocated_worker_cls,
)
from tests.integration.workers_for_tests import CounterWorker, EchoWorker


def make_group(name, n=4, offset=0):
    pool = RayResourcePool([n], use_gpu=False, name_prefix=name, num_cpus_per_worker=0.25)
    return RayWorkerGroup(pool, RayClassWithInitArgs(EchoWorker, offset=offset), name_prefix=name)


@pytest.fixture(scope="module")
def echo_wg(ray_local):
    wg = make_group("echo", 4, offset=100)
    yield wg
    wg.shutdown()


def test_ranks_env_and_actor_names(echo_wg, ray_local):
    infos = echo_wg.whoami("t")
    assert [i["rank"] for i in infos] == [0, 1, 2, 3]
    assert all(i["world_size"] == 4 and i["tag"] == "t" for i in infos)
    assert len({i["master"] for i in infos}) == 1  # one rendezvous address for the group
    assert ray_local.get(ray_local.get_actor("echo_rank_2").pid.remote()) == infos[2]["pid"]


def test_simple_dispatch_modes(echo_wg):
    assert echo_wg.add([1, 2, 3, 4]) == [101, 103, 105, 107]
    assert echo_wg.only_zero("a") == (0, "a")
    assert echo_wg.exec_zero() == 0
    assert echo_wg.dp([1, 2, 3, 4]) == [2, 4, 6, 8]
    assert echo_wg.custom(1) == 10 * 4 + (0 + 1 + 2 + 3)
    assert echo_wg.slow_async(5) == [5, 6, 7, 8]


def test_wrong_list_length_fails_before_sending(echo_wg):
    with pytest.raises(ValueError, match=r"echo.add: Dispatch.ALL_TO_ALL needs argument 0 .*\(4 ranks\).*length 3"):
        echo_wg.add([1, 2, 3])
    with pytest.raises(ValueError, match="needs argument 0 to be a DataProto"):
        echo_wg.tag_rows([1, 2])


def proto(n):
    return DataProto.from_dict({"x": torch.arange(n)}, {"uid": np.array([f"u{i}" for i in range(n)], dtype=object)})


def test_dp_compute_proto_pads_and_keeps_order(echo_wg):
    out = echo_wg.tag_rows(proto(10))
    assert len(out) == 10
    assert out.batch["x"].tolist() == list(range(1, 11))
    assert list(out.non_tensor_batch["uid"]) == [f"u{i}" for i in range(10)]
    assert out.batch["rank"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]  # 12 padded rows, 3 per rank


def test_non_blocking_returns_future(echo_wg):
    fut = echo_wg.tag_rows_async(proto(8))
    assert isinstance(fut, DataProtoFuture)
    assert fut.get().batch["x"].tolist() == list(range(1, 9))


def test_with_func_and_metric(echo_wg):
    out = echo_wg.apply(lambda x: x * 3, proto(8))
    assert out.batch["x"].tolist() == [3 * i for i in range(8)]
    assert echo_wg.metric(proto(8)) == [{"rows": 2, "rank": r} for r in range(4)]


def test_worker_exception_keeps_type_and_names_rank(echo_wg):
    with pytest.raises(KeyError, match=r"worker group 'echo', method 'fail_on', rank 2.*boom on 2"):
        echo_wg.fail_on([-1, -1, 2, -1])


def test_killed_worker_fails_next_call_naming_rank(ray_local):
    wg = make_group("victim", 2)
    pid = wg.pid()[1]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDiedError, match="rank 1"):
        wg.whoami("after-kill")
    wg.shutdown()


def test_colocated_worker_dict_shares_process(ray_local):
    worker_dict = create_colocated_worker_cls({
        "echo": RayClassWithInitArgs(EchoWorker, offset=1),
        "counter": RayClassWithInitArgs(CounterWorker, start=41),
    })
    pool = RayResourcePool([2], use_gpu=False, name_prefix="coloc", num_cpus_per_worker=0.25)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(worker_dict), name_prefix="coloc")
    views = wg.spawn(prefix_set={"echo", "counter"})
    assert views["counter"].bump() == [42, 42]
    assert views["echo"].add([0, 0]) == [1, 2]
    assert views["echo"].pid() == views["counter"].pid()
    assert [i["rank"] for i in views["echo"].whoami("x")] == [0, 1]
    wg.shutdown()


def test_max_colocate_count_lets_two_groups_share_bundles(ray_local):
    pool = RayResourcePool([2], use_gpu=False, name_prefix="shared", max_colocate_count=2, num_cpus_per_worker=0.5)
    first = RayWorkerGroup(pool, RayClassWithInitArgs(CounterWorker, start=0), name_prefix="shared_a")
    second = RayWorkerGroup(pool, RayClassWithInitArgs(CounterWorker, start=10), name_prefix="shared_b")
    assert first.bump() == [1, 1] and second.bump() == [11, 11]
    first.shutdown()
    second.shutdown()
