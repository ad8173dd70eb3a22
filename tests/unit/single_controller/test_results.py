"""Issue 16.5 (unit): a worker's exception re-raised on the driver keeps its type and its message."""

from __future__ import annotations

import traceback

import pytest
from ray.exceptions import RayTaskError
from torch.distributed.checkpoint.api import CheckpointException

from rlsys.single_controller.results import one_line, translate_ray_error

WHERE = "worker group 'colocate.actor', method 'load_checkpoint', rank 0"


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


def remote(cause: BaseException) -> RayTaskError:
    return RayTaskError("load_checkpoint", "".join(traceback.format_exception(cause)), cause)


def last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(exc)[-1].strip()


@pytest.mark.parametrize("cause, type_, shown", [
    (FileNotFoundError(2, "No such file or directory", "/ckpt/global_step_2/actor/extra_state.pt"),
     FileNotFoundError, "[Errno 2] No such file or directory: '/ckpt/global_step_2/actor/extra_state.pt'"),
    (PermissionError(13, "Permission denied", "/ckpt/x"), PermissionError, "[Errno 13] Permission denied: '/ckpt/x'"),
    (OSError("disk full"), OSError, "disk full"),
    (KeyError("boom"), KeyError, "'boom'"),
    (ValueError("bad shard model.layers.0"), ValueError, "bad shard model.layers.0"),
])
def test_type_and_message_kept_on_the_last_line(cause, type_, shown):
    new = translate_ray_error(remote(raised(cause)), WHERE)
    assert isinstance(new, type_) and type(new).__name__ == type_.__name__
    assert last_line(new) == f"{type_.__name__}: {WHERE}: {shown}" or \
        last_line(new) == f'{type_.__name__}: "{WHERE}: {shown}"'  # KeyError shows a repr
    if isinstance(cause, OSError) and cause.filename:
        assert new.filename == cause.filename and new.errno == cause.errno


def test_checkpoint_exception_keeps_the_wrapped_error_and_its_path():
    inner = raised(FileNotFoundError(2, "No such file or directory", "/ckpt/actor/dcp/__0_0.distcp"))
    cause = CheckpointException("load failed", {0: (inner, traceback.extract_tb(inner.__traceback__))})
    new = translate_ray_error(remote(cause), WHERE)
    assert isinstance(new, CheckpointException) and 0 in new.failures
    line = last_line(new)
    assert line.startswith(f"torch.distributed.checkpoint.api.CheckpointException: {WHERE}: CheckpointException")
    assert line.endswith("FileNotFoundError: [Errno 2] No such file or directory: '/ckpt/actor/dcp/__0_0.distcp'")


class NeedsTwoArgs(Exception):
    """copy.copy rebuilds an exception as cls(*args): here that fails."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def test_a_type_that_cannot_be_rebuilt_still_names_type_and_message():
    new = translate_ray_error(remote(raised(NeedsTwoArgs("x", "y"))), WHERE)
    assert one_line(new) == f"RemoteError: {WHERE}: NeedsTwoArgs: x-y"
