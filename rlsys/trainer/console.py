"""What a run prints: rlsys's own lines on the console, everything else in `<run_dir>/logs/`.

By default (`trainer.log_level=info`) the console shows the derived-shapes table, the progress
bar, validation and resume lines and errors. The rest goes to files:

    <run_dir>/logs/driver.log        the driver's Python logging (Ray's start-up lines, warnings)
    <run_dir>/logs/worker-<pid>.log  each Ray worker's stdout and stderr: vLLM's INFO lines,
                                     transformers' load reports and progress bars, engine start-up

How: `ray.init(log_to_driver=False)` stops Ray from copying worker output to the driver with its
`(WorkerDict pid=...)` prefix, and a Ray `worker_process_setup_hook` (`setup_worker_process`,
run first in every worker process of the job) points the worker's file descriptors 1 and 2 at its
own log file, so vLLM's engine and anything it starts in that process write there too. On the
driver, Ray's console handler is raised to ERROR and a file handler takes everything.
`trainer.log_level=debug` leaves all of it on the console as before (Ray's prefixes included).

`RotaryEmbedding: Failed to load weights` (one vLLM warning at every weight sync, on CPU where
sync goes through vLLM's layerwise reload) is not ours to fix: layerwise reload counts every
tensor of a layer as loadable, buffers included, and vLLM's RotaryEmbedding holds only a buffer
(`cos_sin_cache`, computed from the config, in no checkpoint). No checkpoint or sync carries it
(we send `named_parameters()` of the HF model, whose `inv_freq` is a non-persistent buffer), so
at the end of every reload that layer has loaded 0 of its N elements, the warning fires, and vLLM
puts the unchanged cache back. `_BufferOnlyReloadFilter` drops exactly that record for layers
whose class name ends in `RotaryEmbedding` (not with `debug`); other "Failed to load weights"
warnings are kept.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_LEVELS = ("info", "debug")
LOG_DIR_ENV = "RLSYS_LOG_DIR"
LOG_LEVEL_ENV = "RLSYS_LOG_LEVEL"
WORKER_SETUP_HOOK = "rlsys.trainer.console.setup_worker_process"
LAYERWISE_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def check_log_level(log_level: str) -> str:
    if log_level not in LOG_LEVELS:
        raise ValueError(f"trainer.log_level={log_level!r}; choose one of {LOG_LEVELS}")
    return log_level


def log_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- driver -------------------------------------------------------------------------------
def setup_driver_console(log_level: str, run_dir: Path) -> Path:
    """Route the driver's Python logging: a file handler in logs/driver.log for everything; on
    the console only errors (info) or everything (debug). Call before `ray.init`."""
    import ray  # noqa: F401  (configures the "ray" logger and its console handler at import)

    debug = check_log_level(log_level) == "debug"
    path = log_dir(run_dir) / "driver.log"
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
    file_handler._rlsys = True  # marks ours, so a second run in this process replaces it
    logging.captureWarnings(not debug)
    for name in ("", "ray", "py.warnings"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "_rlsys", False)]:
            logger.removeHandler(handler)
        if name != "py.warnings":
            logger.addHandler(file_handler)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.NOTSET if debug else logging.ERROR)
    logging.getLogger().setLevel(logging.INFO)
    return path


def ray_init_kwargs(log_level: str) -> dict:
    """Logging arguments for `ray.init(...)`."""
    return {"log_to_driver": check_log_level(log_level) == "debug"}


def worker_runtime_env(log_level: str, run_dir: Path, env_vars: dict) -> dict:
    """The job's Ray `runtime_env`: `env_vars` plus where and how workers log."""
    env = dict(env_vars, **{LOG_DIR_ENV: str(log_dir(run_dir).resolve()), LOG_LEVEL_ENV: check_log_level(log_level)})
    return {"env_vars": env, "worker_process_setup_hook": WORKER_SETUP_HOOK}


# ---- workers ------------------------------------------------------------------------------
class _BufferOnlyReloadFilter(logging.Filter):
    """Drops vLLM's per-sync `<X>RotaryEmbedding: Failed to load weights` (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "%s: Failed to load weights" and record.args
                    and str(record.args[0]).endswith("RotaryEmbedding"))


def install_worker_filters() -> None:
    logger = logging.getLogger(LAYERWISE_LOGGER)
    if not any(isinstance(f, _BufferOnlyReloadFilter) for f in logger.filters):
        logger.addFilter(_BufferOnlyReloadFilter())


def redirect_output(path: Path) -> None:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at `path`, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def setup_worker_process() -> None:
    """Ray's `worker_process_setup_hook`: runs in every worker process before its first task.
    With `debug` it changes nothing."""
    directory = os.environ.get(LOG_DIR_ENV)
    if not directory or os.environ.get(LOG_LEVEL_ENV, "info") == "debug":
        return
    install_worker_filters()
    try:  # on another node of a cluster the driver's run dir is made locally (unless shared)
        Path(directory).mkdir(parents=True, exist_ok=True)
        redirect_output(Path(directory) / f"worker-{os.getpid()}.log")
    except OSError as exc:  # unwritable there: keep Ray's own worker log files
        print(f"rlsys: worker {os.getpid()}: cannot log to {directory} ({exc}); output stays in Ray's logs",
              file=sys.stderr, flush=True)
