"""Root fixtures: one local Ray instance per test session (CPU only), the cached warmed-up base
model, GPU-marker skipping."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def base_model_dir():
    """The embedded base model every `python -m rlsys.main` run of the suite uses (the default
    cache, $RLSYS_CACHE or ~/.cache/rlsys): trained once per machine, found on later calls."""
    from rlsys.models.warmup import ensure_base_model

    return ensure_base_model(seed=0)
