"""torch.profiler around one worker call, summarised as a table a person reads.

`trainer.profile_steps` names training steps; at those steps the driver asks the actor to
profile its update (`profiled(...)`), and the actor writes `update_step{N}_rank{R}.txt` under
`trainer.profile_dir` (default: the run directory's `profile/`): top operators by self device
time (CUDA, then a second table by self CPU time) or self CPU time (CPU), and on CUDA the share
of the wall time the device was busy.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def profile_summary(prof, device: torch.device, wall_s: float, rows: int = 30) -> str:
    """Top operators of a finished torch.profiler run, with the device-busy share on CUDA:
    busy = sum of self device time over all operators / wall_s (kernels only; overlapping
    streams can push it above 100%)."""
    events = prof.key_averages()
    if device.type != "cuda":
        table = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70)
        return f"wall {wall_s:.3f} s (CPU)\n{table}"

    def self_device_us(e):
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)

    from torch.autograd import DeviceType

    # device-side events only: an operator's row repeats its kernels' time (Triton ops appear twice)
    busy_s = sum(self_device_us(e) for e in events if e.device_type == DeviceType.CUDA) / 1e6
    table = events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)
    # host side: syncs (cudaStreamSynchronize, aten::item, pageable copies), cudaMalloc, launches
    host = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70)
    return (f"device busy {busy_s:.3f} s of {wall_s:.3f} s wall ({busy_s / wall_s:.0%}; kernels only)\n{table}\n"
            f"host: top operators by self CPU time\n{host}")


@contextmanager
def profiled(path: str | Path | None, device: torch.device) -> Iterator[None]:
    """Run the body under torch.profiler and write `profile_summary` to `path`; a no-op when
    `path` is None."""
    if path is None:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(profile_summary(prof, device, time.perf_counter() - start) + "\n")
