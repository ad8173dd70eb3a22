"""DP_COMPUTE_PROTO auto padding on 4 CPU workers: every batch size 1..19 comes back whole and in order.

`EchoWorker.tag_rows` returns x + 1 per row, the computing rank, and the uid it was given.
The group pads N rows to a multiple of 4, gives rank r the rows [r*c, (r+1)*c) with c = ceil(N/4),
and strips the pad rows from the result.
"""

import numpy as np
import pytest
import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
from tests.integration.workers_for_tests import EchoWorker

WORLD = 4


@pytest.fixture(scope="module")
def pad_wg(ray_local):
    pool = RayResourcePool([WORLD], use_gpu=False, name_prefix="autopad", num_cpus_per_worker=0.25)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(EchoWorker), name_prefix="autopad")
    yield wg
    wg.shutdown()
    pool.remove_placement_groups()


def rows(n):
    """Row i holds x = [100 i, 100 i + 1, 100 i + 2] (distinct per row and column), uid 'row-i'."""
    x = torch.arange(n * 3, dtype=torch.int64).reshape(n, 3) + 97 * torch.arange(n).unsqueeze(1)
    uids = np.array([f"row-{i}" for i in range(n)], dtype=object)
    return DataProto.from_dict({"x": x}, {"uid": uids})


@pytest.mark.parametrize("n", range(1, 20))
def test_padded_batch_returns_each_row_transformed_in_order(pad_wg, n):
    data = rows(n)
    x_before = data.batch["x"].clone()
    out = pad_wg.tag_rows(data)
    assert len(out) == n
    assert torch.equal(out.batch["x"], x_before + 1)
    assert list(out.non_tensor_batch["uid"]) == [f"row-{i}" for i in range(n)]
    per_rank = -(-n // WORLD)  # ceil(n / 4): rows per rank after padding
    assert out.batch["rank"].tolist() == [i // per_rank for i in range(n)]
    assert torch.equal(data.batch["x"], x_before) and len(data) == n  # the caller's batch is untouched


def test_every_rank_runs_even_when_it_gets_only_pad_rows(pad_wg):
    before = pad_wg.num_calls("tag_rows")
    out = pad_wg.tag_rows(rows(1))  # padded to 4: ranks 1..3 see only pad rows
    assert out.batch["x"].tolist() == [[1, 2, 3]]
    assert [after - b for after, b in zip(pad_wg.num_calls("tag_rows"), before)] == [1, 1, 1, 1]
