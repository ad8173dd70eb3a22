"""Pure parts of the controller: register attributes, dispatch/collect functions, padding, WorkerDict.

No Ray here: dispatch functions only ask the group for `world_size`, so a tiny stand-in
object with that one attribute is the whole group.
"""

import asyncio
import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Execute, RayClassWithInitArgs, Worker, create_colocated_worker_cls, register
from rlsys.single_controller.decorator import (
    MAGIC_ATTR, collect_dp_compute_proto, collect_list, collect_rank_zero, dispatch_all_to_all,
    dispatch_dp_compute_proto, dispatch_dp_compute_proto_with_func, dispatch_one_to_all, dispatch_rank_zero,
    prepare_proto_args, registered_methods, resolve_dispatch_mode, unpad_output,
)

GROUP4 = SimpleNamespace(world_size=4)


def proto(n, start=0):
    return DataProto.from_dict({"x": torch.arange(start, start + n)},
                               {"uid": np.array([f"u{i}" for i in range(start, start + n)], dtype=object)})


class Base(Worker):
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def hello(self, name):
        """Says hello."""
        return f"hello {name} from {self.rank}"

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO, execute_mode=Execute.RANK_ZERO, blocking=False)
    async def double(self, data):
        return DataProto.from_dict({"x": data.batch["x"] * 2})

    def plain(self):
        return 1


class Child(Base):
    @register()
    def extra(self, x):
        return x


def test_register_stores_attributes_and_keeps_function():
    attrs = getattr(Base.double, MAGIC_ATTR)
    assert attrs == {"dispatch_mode": Dispatch.DP_COMPUTE_PROTO, "execute_mode": Execute.RANK_ZERO, "blocking": False}
    assert getattr(Child.extra, MAGIC_ATTR)["dispatch_mode"] is Dispatch.ALL_TO_ALL  # the default
    assert Base.hello.__name__ == "hello" and Base.hello.__doc__ == "Says hello."


def test_register_works_on_sync_and_async_methods(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    worker = Base()
    assert worker.hello("ann") == "hello ann from 2"
    assert inspect.iscoroutinefunction(Base.double)
    out = asyncio.run(worker.double(proto(3)))
    assert out.batch["x"].tolist() == [0, 2, 4]


def test_registered_methods_walks_the_mro():
    worker_base = set(registered_methods(Worker))  # verl's group methods every Worker has
    assert worker_base == {"execute_func_rank_zero", "execute_with_func_generator",
                           "_query_dispatch_info", "_query_collect_info"}
    assert set(registered_methods(Child)) - worker_base == {"hello", "double", "extra"}
    assert "plain" not in registered_methods(Base)


@pytest.mark.parametrize("kwargs, match", [
    ({"dispatch_mode": "one_to_all"}, "dispatch_mode must be a Dispatch"),
    ({"dispatch_mode": {"dispatch_fn": len}}, "custom dispatch_mode"),
    ({"execute_mode": "all"}, "execute_mode must be an Execute"),
])
def test_register_rejects_bad_modes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        register(**kwargs)


def test_one_to_all_and_rank_zero():
    assert dispatch_one_to_all(GROUP4, 1, k="v") == (([1, 1, 1, 1],), {"k": ["v"] * 4})
    assert dispatch_rank_zero(GROUP4, 1, k="v") == (([1],), {"k": ["v"]})
    assert collect_list(GROUP4, (1, 2)) == [1, 2]
    assert collect_rank_zero(GROUP4, ["a"]) == "a"


def test_all_to_all_splits_world_size_lists_else_sends_everything_to_every_rank():
    # verl's rule: split only when every argument is a list of world-size entries (tuples are values)
    assert dispatch_all_to_all(GROUP4, [1, 2, 3, 4], k=[5, 6, 7, 8]) == (([1, 2, 3, 4],), {"k": [5, 6, 7, 8]})
    assert dispatch_all_to_all(GROUP4, 7, k="a") == (([7] * 4,), {"k": ["a"] * 4})
    assert dispatch_all_to_all(GROUP4, [1, 2, 3]) == (([[1, 2, 3]] * 4,), {})
    assert dispatch_all_to_all(GROUP4, [1, 2, 3, 4], k=5) == (([[1, 2, 3, 4]] * 4,), {"k": [5] * 4})
    assert dispatch_all_to_all(GROUP4, (1, 2, 3, 4)) == (([(1, 2, 3, 4)] * 4,), {})
    dp_fn = resolve_dispatch_mode(Dispatch.DP_COMPUTE)[0]  # DP_COMPUTE stays strict
    with pytest.raises(ValueError, match=r"argument 0 must be a list with one entry per rank \(4 ranks\), got length 3"):
        dp_fn(GROUP4, [1, 2, 3])
    with pytest.raises(ValueError, match=r"argument 'k' .* got int"):
        dp_fn(GROUP4, [1, 2, 3, 4], k=5)
    dp_fn, dp_collect = resolve_dispatch_mode(Dispatch.DP_COMPUTE)
    assert dp_fn(GROUP4, [1, 2, 3, 4]) == (([1, 2, 3, 4],), {}) and dp_collect is collect_list


def test_dp_compute_proto_chunks_in_order():
    (chunks,), kw = dispatch_dp_compute_proto(GROUP4, proto(8), other=proto(8, start=100))
    assert [c.batch["x"].tolist() for c in chunks] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [list(c.non_tensor_batch["uid"]) for c in kw["other"]][3] == ["u106", "u107"]
    with pytest.raises(ValueError, match="argument 0 has 10 rows, not divisible by the 4 ranks"):
        dispatch_dp_compute_proto(GROUP4, proto(10))
    with pytest.raises(ValueError, match="argument 0 must be a DataProto"):
        dispatch_dp_compute_proto(GROUP4, [1, 2, 3, 4])


def test_dp_compute_proto_with_func_broadcasts_the_function():
    (fns, chunks), _ = dispatch_dp_compute_proto_with_func(GROUP4, torch.neg, proto(4))
    assert fns == [torch.neg] * 4 and [len(c) for c in chunks] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="argument 0 must be a function"):
        dispatch_dp_compute_proto_with_func(GROUP4, proto(4), proto(4))


def test_padding_round_trip_keeps_rows_and_order():
    """10 rows on 4 ranks: padded to 12, split 3 per rank, concatenated, the 2 pad rows removed."""
    args, kwargs, pad_size = prepare_proto_args(4, (proto(10),), {"other": proto(10, start=50)})
    assert pad_size == 2 and len(args[0]) == 12 and len(kwargs["other"]) == 12
    (chunks,), _ = dispatch_dp_compute_proto(GROUP4, *args)
    outputs = [DataProto.from_dict({"y": c.batch["x"] * 10}, {"uid": c.non_tensor_batch["uid"]}) for c in chunks]
    result = unpad_output(collect_dp_compute_proto(GROUP4, outputs), pad_size)
    assert result.batch["y"].tolist() == [10 * i for i in range(10)]
    assert list(result.non_tensor_batch["uid"]) == [f"u{i}" for i in range(10)]


def test_prepare_proto_args_validates_inputs():
    fn_args, _, pad = prepare_proto_args(4, (len, proto(8)), {}, skip_first=True)
    assert fn_args[0] is len and pad == 0
    _, _, pad = prepare_proto_args(4, (proto(10),), {}, pad=False)
    assert pad == 0
    with pytest.raises(ValueError, match="argument 'b' must be a DataProto"):
        prepare_proto_args(4, (proto(8),), {"b": 3})
    with pytest.raises(ValueError, match="same number of rows"):
        prepare_proto_args(4, (proto(8), proto(6)), {})


def test_collect_dp_compute_proto_names_the_bad_rank():
    with pytest.raises(TypeError, match="rank 1 returned dict"):
        collect_dp_compute_proto(GROUP4, [proto(1), {"x": 1}])


def test_custom_dispatch_mode_is_resolved():
    def dispatch_fn(wg, x):
        return ([x] * wg.world_size,), {}

    mode = {"dispatch_fn": dispatch_fn, "collect_fn": collect_rank_zero}
    assert getattr(register(dispatch_mode=mode)(lambda self, x: x), MAGIC_ATTR)["dispatch_mode"] is mode
    assert resolve_dispatch_mode(mode) == (dispatch_fn, collect_rank_zero)


class Other(Worker):
    def __init__(self, start):
        super().__init__()
        self.start = start

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def whoami(self):
        return (self.start, self.rank, self.world_size)


def test_worker_dict_forwards_role_methods_with_attributes(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    worker_dict_cls = create_colocated_worker_cls({"base": Child, "other": RayClassWithInitArgs(Other, start=7)}).cls
    assert {"base_hello", "base_double", "base_extra", "other_whoami"} <= set(registered_methods(worker_dict_cls))
    assert getattr(worker_dict_cls.base_double, MAGIC_ATTR)["execute_mode"] is Execute.RANK_ZERO
    assert inspect.iscoroutinefunction(worker_dict_cls.base_double)
    assert worker_dict_cls.role_classes == {"base": Child, "other": Other}
    worker = worker_dict_cls()
    assert worker.base_hello("bo") == "hello bo from 1"
    assert worker.other_whoami() == (7, 1, 3)
    assert asyncio.run(worker.base_double(proto(2))).batch["x"].tolist() == [0, 2]


def test_worker_dict_and_class_spec_reject_mistakes():
    with pytest.raises(ValueError, match="at least one role"):
        create_colocated_worker_cls({})
    with pytest.raises(ValueError, match="subclass of rlsys Worker"):
        RayClassWithInitArgs(dict)
    with pytest.raises(ValueError, match="set by the worker group"):
        RayClassWithInitArgs(Other, 1).update_options({"scheduling_strategy": "SPREAD"})


def test_rank_zero_worker_picks_a_rendezvous_address(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1234")
    assert Worker().get_master_addr_port() == ("10.0.0.1", "1234")  # an address already given is kept
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.delenv("MASTER_PORT")
    addr, port = Worker().get_master_addr_port()
    assert addr and 0 < int(port) < 65536


def test_mesh_registration_is_queried_and_copied_between_workers(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    role = Worker()
    role._register_dispatch_collect_info("actor", dp_rank=3, is_collect=False)
    assert role._query_dispatch_info("actor") == 3 and role._query_collect_info("actor") is False
    holder = Worker()
    holder.set_dispatch_collect("actor_in_dict", **role.get_dispatch_collect())
    assert holder.get_dispatch_collect() == {"dispatch_dp_rank": {"actor_in_dict": 3},
                                             "collect_dp_rank": {"actor_in_dict": False}}
    with pytest.raises(AssertionError, match="'actor_in_dict' is already registered"):
        holder.set_dispatch_collect("actor_in_dict", **role.get_dispatch_collect())
    with pytest.raises(KeyError, match="never registered mesh 'critic'"):
        holder._query_dispatch_info("critic")


def test_registered_dispatch_mode_pickles_by_name_and_can_be_removed():
    import pickle

    from rlsys.single_controller.decorator import DISPATCH_MODE_FN_REGISTRY, register_dispatch_mode

    mode = register_dispatch_mode("unit_test_mode", dispatch_one_to_all, collect_list)
    try:
        assert Dispatch.UNIT_TEST_MODE is mode and "UNIT_TEST_MODE" in Dispatch and mode in Dispatch
        assert pickle.loads(pickle.dumps(mode)) is mode
        assert resolve_dispatch_mode(mode) == (dispatch_one_to_all, collect_list)
        with pytest.raises(AssertionError, match="already exists"):
            register_dispatch_mode("unit_test_mode", dispatch_one_to_all, collect_list)
    finally:
        DISPATCH_MODE_FN_REGISTRY.pop(mode)
        Dispatch.remove("unit_test_mode")
    assert "UNIT_TEST_MODE" not in Dispatch and not hasattr(Dispatch, "UNIT_TEST_MODE")
