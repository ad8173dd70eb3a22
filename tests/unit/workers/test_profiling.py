"""rlsys.workers.profiling: a profiled body writes a table of its operators; no path, no profile."""

from __future__ import annotations

import torch

from rlsys.workers.profiling import profiled


def test_profiled_writes_an_operator_table_and_none_is_a_no_op(tmp_path):
    path = tmp_path / "deep" / "update_step3_rank0.txt"
    with profiled(path, torch.device("cpu")):
        torch.randn(64, 64) @ torch.randn(64, 64)
    text = path.read_text()
    assert "aten::mm" in text and text.startswith("wall ")
    with profiled(None, torch.device("cpu")):
        torch.randn(4) + 1
    assert list(tmp_path.rglob("*.txt")) == [path]
