"""setup -> train -> cleanup for one run: the recipe body behind `python -m rlsys.main`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rlsys.config.batch_sizes import derive_batch_shapes
from rlsys.config.checks import check_config, needs_critic, needs_reference


def resolve_model_path(config) -> str:
    if config.model.path == "builtin:tiny-calc":  # the tool task's base model (rlsys/models/tool_warmup.py)
        from rlsys.models.tool_warmup import ensure_tool_model

        return str(ensure_tool_model(seed=0))
    if config.model.path.startswith("builtin:"):
        from rlsys.models.warmup import ensure_base_model

        if config.model.path != "builtin:tiny-arith":
            raise ValueError(f"model.path={config.model.path!r}: the only built-in model is builtin:tiny-arith")
        return str(ensure_base_model(seed=0))
    if not Path(config.model.path).exists():
        raise ValueError(f"model.path={config.model.path!r} does not exist (no downloads: pass a local HF directory)")
    return config.model.path


def derive_shapes(config, num_train_ranks: int):
    shapes = derive_batch_shapes(
        config.data.train_batch_size, config.rollout.n, num_train_ranks,
        config.actor.ppo_mini_batch_size, config.actor.micro_batch_size_per_rank,
        max_tokens_per_micro_batch=config.actor.max_tokens_per_micro_batch,
    )
    if needs_critic(config):
        derive_batch_shapes(
            config.data.train_batch_size, config.rollout.n, num_train_ranks,
            config.critic.ppo_mini_batch_size, config.critic.micro_batch_size_per_rank, prefix="critic",
            max_tokens_per_micro_batch=config.critic.max_tokens_per_micro_batch,
        )
    return shapes


def _start_ray(config, use_gpu: bool, run_dir: Path) -> None:
    from rlsys.trainer import console
    from rlsys.trainer.cluster import start_ray

    # The working directory goes on the workers' path so user roles (roles.<name>._target_)
    # defined beside the run import in the worker processes too.
    env = {"TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": str(config.rollout.kv_cache_space_gb),
           "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    for key in ("RLSYS_CACHE", "VLLM_USE_FLASHINFER_SAMPLER", "VLLM_WORKER_MULTIPROC_METHOD", "NCCL_NVLS_ENABLE",
                "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS", "VLLM_CPU_OMP_THREADS_BIND"):
        if key in os.environ:
            env[key] = os.environ[key]
    # A private local Ray, or the cluster at trainer.ray_address / RAY_ADDRESS (rlsys/trainer/cluster.py)
    start_ray(config, console.worker_runtime_env(config.trainer.log_level, run_dir, env),
              console.ray_init_kwargs(config.trainer.log_level))  # workers log to run_dir/logs (issue 15.5)


def launch(config, run_dir: Path) -> dict:
    import ray

    from rlsys.data.tasks import load_task_rows
    from rlsys.trainer.checkpoint import CheckpointManager
    from rlsys.trainer.cluster import write_placement
    from rlsys.trainer.placement import build_role_groups, check_placement
    from rlsys.trainer.rl_trainer import RLTrainer
    from rlsys.trainer.sync import WeightSyncDriver
    from rlsys.data.prompts import PromptLoader, tokenize_prompts

    cuda = torch.cuda.is_available()
    check_config(config, cuda)
    from rlsys.trainer.console import setup_driver_console

    setup_driver_console(config.trainer.log_level, run_dir)  # only rlsys's lines on the console
    use_gpu = config.trainer.device == "cuda" or (config.trainer.device == "auto" and cuda)
    train_ranks, _ = check_placement(config, use_gpu)
    shapes = derive_shapes(config, train_ranks * config.trainer.nnodes)
    print(shapes.table(), flush=True)
    model_path = resolve_model_path(config)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_rows, val_rows = load_task_rows(config, tokenizer)
    loader = PromptLoader(train_rows, tokenizer, config.data.train_batch_size, config.data.max_prompt_length,
                          config.trainer.seed)
    val_batch = tokenize_prompts(val_rows, tokenizer, config.data.max_prompt_length)

    from rlsys.trainer.async_trainer import AsyncRLTrainer, apply_async_defaults

    apply_async_defaults(config)  # trainer.max_staleness >= 1: truncated IS on unless set
    from rlsys.trainer.teardown import RunTeardown

    teardown = RunTeardown()  # close(): engines, Ray and /dev/shm cleaned up
    _start_ray(config, use_gpu, run_dir)
    teardown.catch_sigterm()  # after ray.init, which sets a SIGTERM handler that aborts
    try:
        roles = teardown.roles = build_role_groups(config, model_path, use_gpu, needs_reference(config),
                                                   needs_critic(config))
        write_placement(roles.groups, run_dir)  # placement.json: each rank's node
        for group in (roles.actor, roles.reference, roles.critic):
            if group is not None:
                group.init_model()
        roles.rollout.init_engine(roles.rollout.accelerator_ids())
        teardown.record()  # the engines' /dev/shm names, in case a worker dies later
        weight_sync = WeightSyncDriver(config, roles, "cuda" if use_gpu else "cpu")
        checkpoints = CheckpointManager.from_config(config, run_dir, roles, loader, weight_sync)
        trainer_cls = AsyncRLTrainer if config.trainer.max_staleness > 0 else RLTrainer
        trainer = trainer_cls(config, roles, loader, val_batch, shapes, run_dir, weight_sync, checkpoints)
        checkpoints.attach(trainer)
        return trainer.fit()
    finally:
        teardown.close(ray.shutdown)
