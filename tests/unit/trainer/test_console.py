"""Issue 15.5 (unit): the console module's pieces that need no Ray: log-level check, the filter
for vLLM's per-sync RotaryEmbedding warning, and the worker's output redirection."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from rlsys.trainer import console


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(console.LAYERWISE_LOGGER, logging.WARNING, __file__, 1, msg, args, None)


def test_unknown_log_level_names_the_key():
    with pytest.raises(ValueError, match="trainer.log_level='verbose'"):
        console.check_log_level("verbose")


def test_filter_drops_only_the_buffer_only_rotary_warning():
    keep = console._BufferOnlyReloadFilter().filter
    assert not keep(record("%s: Failed to load weights", "RotaryEmbedding"))
    assert not keep(record("%s: Failed to load weights", "Llama3RotaryEmbedding"))
    assert keep(record("%s: Failed to load weights", "QKVParallelLinear"))  # a real failure stays
    assert keep(record("%s: Delayed processing", "RotaryEmbedding"))


def test_worker_runtime_env_carries_log_dir_level_and_hook(tmp_path):
    env = console.worker_runtime_env("info", tmp_path, {"A": "1"})
    assert env["env_vars"]["A"] == "1" and env["env_vars"][console.LOG_DIR_ENV] == str(tmp_path / "logs")
    assert env["worker_process_setup_hook"] == console.WORKER_SETUP_HOOK
    assert console.ray_init_kwargs("info") == {"log_to_driver": False}
    assert console.ray_init_kwargs("debug") == {"log_to_driver": True}


@pytest.mark.parametrize("level", ["info", "debug"])
def test_setup_worker_process_sends_output_to_the_log_file_unless_debug(tmp_path, level):
    script = "import os, sys; from rlsys.trainer.console import setup_worker_process; setup_worker_process(); " \
             "print('to stdout'); os.write(2, b'to fd 2\\n')"
    env = dict(os.environ, **{console.LOG_DIR_ENV: str(tmp_path), console.LOG_LEVEL_ENV: level})
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    logs = list(tmp_path.glob("worker-*.log"))
    if level == "info":
        assert proc.stdout == "" and proc.stderr == ""
        assert logs[0].read_text() == "to stdout\nto fd 2\n"
    else:
        assert proc.stdout == "to stdout\n" and proc.stderr == "to fd 2\n" and logs == []
