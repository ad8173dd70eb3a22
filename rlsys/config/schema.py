"""Typed configuration schema for rlsys, registered in Hydra's ConfigStore.

This is the one source of truth for keys and defaults: YAML files under `configs/` and
`recipes/` only set values, and a misspelt key fails at start with Hydra naming it.
Batch sizes are all counted in *sequences* (one prompt x one sample) except
`data.train_batch_size`, which counts prompts; `rlsys.config.batch_sizes` derives the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ModelConfig:
    # "builtin:tiny-arith" builds (once, cached) the embedded tiny model; otherwise a HF path.
    path: str = "builtin:tiny-arith"
    dtype: str = "auto"  # the dtype vLLM serves and weights cross in; auto: float32 on CPU, bfloat16 on CUDA
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    task: str = "arithmetic"  # built-in synthetic task used when no files are given
    # verl's layout: parquet/jsonl with `prompt` (chat messages), `data_source`,
    # `reward_model.ground_truth`, `extra_info`; one path or a list.
    train_files: Optional[Any] = None
    val_files: Optional[Any] = None
    prompt_key: str = "prompt"
    apply_chat_template: bool = True
    truncation: str = "filter"  # filter | truncate | error: prompts over max_prompt_length
    train_batch_size: int = 32  # prompts per step
    val_size: int = 128
    train_size: int = 4096
    max_prompt_length: int = 16
    max_response_length: int = 8


@dataclass
class MultiTurnConfig:
    """Multi-turn, tool-using rollouts (rlsys/rollout/agent, docs/multi_turn.md). The response
    (all turns: model and observation tokens) is capped at data.max_response_length tokens."""

    enable: bool = False
    max_turns: int = 4  # model turns per trajectory
    max_tokens_per_turn: int = 16
    on_budget: str = "truncate"  # truncate (keep the tokens, mark multi_turn_truncated) | drop (also no gradient)
    env: str = "rlsys.envs.tool_env:ToolEnv"  # "package.module:Class" or "file.py:Class"
    env_kwargs: Dict[str, Any] = field(default_factory=dict)
    tools: Dict[str, Any] = field(default_factory=lambda: {"calc": "rlsys.envs.calculator:calculator"})
    parser: str = "tag"  # tag ([name:args]) | hermes (<tool_call>{"name":..., "arguments":{...}}</tool_call>)
    tool_timeout_s: float = 5.0  # one tool call; a slower one is abandoned and counts as its sample's error
    on_tool_error: str = "penalty"  # penalty (the error is the observation, reward += tool_error_penalty) | raise
    tool_error_penalty: float = 0.0


@dataclass
class RolloutConfig:
    name: str = "vllm"  # vllm | hf
    n: int = 1  # samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    tensor_parallel_size: int = 1
    max_model_len: int = 64
    gpu_memory_utilization: float = 0.4
    kv_cache_space_gb: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool = True
    free_cache_engine: bool = True  # GPU colocate: sleep the engine while the actor trains
    val_temperature: float = 0.0  # 0 = greedy validation
    val_n: int = 1
    multi_turn: MultiTurnConfig = field(default_factory=MultiTurnConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    lr_scheduler: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


@dataclass
class ActorConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    ppo_mini_batch_size: int = 32  # sequences per optimizer step (all ranks together)
    micro_batch_size_per_rank: int = 8  # sequences per forward/backward on one rank (fixed micro-batches)
    # Token-budget micro-batches (verl's use_dynamic_bsz): null = fixed micro_batch_size_per_rank;
    # an int packs length-sorted sequences so that rows x longest row <= this many tokens.
    max_tokens_per_micro_batch: Optional[int] = None
    # Precision (docs/precision.md): master weights, gradients and AdamW state in param_dtype;
    # forward/backward in compute_dtype (FSDP2 MixedPrecisionPolicy). auto: bf16 on CUDA, fp32 on CPU.
    param_dtype: str = "float32"
    compute_dtype: str = "auto"
    gradient_checkpointing: bool = False  # non-reentrant activation checkpointing of the decoder layers
    logprob_chunk_size: int = 4096  # tokens per LM-head + log-softmax chunk (no (batch, seq, vocab) tensor)
    # the update's forward keeps the head's raw logits (tokens x vocab, compute dtype) for the
    # backward instead of recomputing them: one LM-head matmul fewer for that memory
    logprob_keep_logits: bool = False
    # torch.compile the decoder layers and LM-head chunks (actor and reference); null = on CUDA only
    use_torch_compile: Optional[bool] = None
    # attention kernel of the trainer's decoder (actor and reference; rlsys.workers.attention):
    # auto (flash on CUDA, HF's sdpa on CPU) | sdpa | flash | cudnn | efficient | math
    attention_backend: str = "auto"
    ppo_epochs: int = 1
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float = 3.0
    loss_agg_mode: str = "token-mean"
    entropy_coeff: float = 0.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    kl_loss_type: str = "low_var_kl"


@dataclass
class ReferenceConfig:
    micro_batch_size_per_rank: int = 8  # sequences per forward (fixed micro-batches)
    max_tokens_per_micro_batch: Optional[int] = None  # token-budget micro-batches, as actor's
    compute_dtype: str = "auto"  # frozen weights are loaded in this dtype (no master copy)


@dataclass
class CriticConfig:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    ppo_mini_batch_size: int = 32
    micro_batch_size_per_rank: int = 8
    max_tokens_per_micro_batch: Optional[int] = None
    param_dtype: str = "float32"
    compute_dtype: str = "auto"
    gradient_checkpointing: bool = False
    attention_backend: str = "auto"  # as actor.attention_backend, for the value model
    ppo_epochs: int = 1
    cliprange_value: float = 0.5
    loss_agg_mode: str = "token-mean"


@dataclass
class KLControlConfig:
    type: str = "fixed"  # fixed | adaptive
    kl_coef: float = 0.001
    target_kl: float = 0.1
    horizon: int = 10000


@dataclass
class RolloutCorrectionConfig:
    """The rollout engine's log-probs as the behaviour policy (rlsys/algorithms/rollout_correction.py)."""

    tis_cap: Optional[float] = None  # truncated IS: weight min(exp(old - rollout), cap) on the pg term; null = off
    use_rollout_log_probs_as_old: bool = False  # old log-probs := rollout log-probs; skips the old-log-prob phase


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "gae"  # gae | grpo | rloo | reinforce_plus_plus | reinforce_plus_plus_baseline
    gamma: float = 1.0
    lam: float = 1.0
    norm_adv_by_std_in_grpo: bool = True
    use_kl_in_reward: bool = False
    kl_penalty: str = "k1"
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)
    rollout_correction: RolloutCorrectionConfig = field(default_factory=lambda: RolloutCorrectionConfig())


@dataclass
class WeightSyncConfig:
    bucket_size_mb: int = 256
    verify: bool = False
    timeout_s: float = 120.0
    load_mode: str = "auto"  # auto | layerwise | direct: how vLLM loads (layerwise where it repacks: CPU)


@dataclass
class RewardConfig:
    fn: Optional[str] = None  # "package.module:function" or "path/to/file.py:function"
    on_error: str = "raise"  # raise | zero: what a reward function that raises does to the run
    format_score: float = 0.0  # partial credit for a well-formed but wrong answer (math verifiers)
    # Seconds one call of the function may take; it runs in a child process of the reward worker,
    # killed (and restarted) on a timeout, which counts as that sample's error. null: in-process, unbounded.
    timeout_s: Optional[float] = 60.0
    # Above this fraction of a step's samples failing (on_error=zero), the run stops with the first error.
    max_error_fraction: float = 0.5


@dataclass
class TrainerConfig:
    total_steps: int = 40
    test_freq: int = 10
    val_before_train: bool = True
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    nnodes: int = 1
    n_devices_per_node: int = 1  # GPUs per node on CUDA; worker processes per node on CPU
    # placement=split: devices per node given to rollout engines (the rest train). On CPU
    # "devices" are processes, so split works with n_devices_per_node=1 (one of each).
    rollout_devices_per_node: int = 1
    logger: list = field(default_factory=lambda: ["console", "jsonl"])
    # torch.profiler around the actor update at these training steps (rlsys/workers/profiling.py):
    # one table per rank, update_step{N}_rank{R}.txt, under profile_dir (null: <run_dir>/profile)
    profile_steps: list = field(default_factory=list)
    profile_dir: Optional[str] = None
    # info: the console shows rlsys's lines, vLLM/transformers/Ray output goes to <run_dir>/logs/;
    # debug: all of it on the console too (rlsys/trainer/console.py)
    log_level: str = "info"
    ray_num_cpus: Optional[int] = None  # a local Ray's CPUs (null: max(8, cores)); not with ray_address
    # Join a running Ray cluster at this GCS address (host:port); null: RAY_ADDRESS if set, else a
    # private local Ray; "local": a private local Ray even if RAY_ADDRESS is set (docs/cluster.md).
    ray_address: Optional[str] = None
    ray_working_dir: Optional[str] = None  # joining a cluster: a directory shipped to every node (Ray working_dir)
    worker_timeout_s: float = 600.0
    # Checkpoints (rlsys/trainer/checkpoint.py): every save_freq steps and at the last step; <= 0: never.
    save_freq: int = -1
    max_ckpt_to_keep: Optional[int] = None  # null: keep all
    resume: str = "auto"  # auto (newest complete checkpoint, if any) | disable | a global_step_<N> directory
    default_local_dir: Optional[str] = None  # null: <run_dir>/checkpoints
    # Asynchronous RL (rlsys/trainer/async_trainer.py, docs/async.md): a trained sample's weights
    # are at most max_staleness actor updates old; 0 = the synchronous loop; >= 1 needs placement=split.
    max_staleness: int = 0


@dataclass
class RoleSpec:
    """A user role (Worker subclass with @register methods) added to the run by config.

    Its class is built as cls(config, model_path, **kwargs); the driver calls its
    `process_rollouts(data) -> DataProto` after the reward phase of every step
    (see docs/custom_roles.md)."""

    _target_: str = "???"  # "package.module.ClassName"
    placement: str = "colocate"  # colocate (inside the WorkerDict) | own_pool
    num_workers: int = 1  # own_pool only
    use_gpu: bool = False  # own_pool only
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RLConfig:
    placement: str = "colocate"  # colocate | split
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: ReferenceConfig = field(default_factory=ReferenceConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # name -> RoleSpec fields; kept untyped because OmegaConf cannot merge a new dataclass
    # entry from the command line, and checked against RoleSpec by `role_spec()` at start.
    roles: Dict[str, Any] = field(default_factory=dict)


def role_spec(name: str, value) -> RoleSpec:
    """`roles.<name>` as a RoleSpec; an unknown key fails naming it."""
    known = {f for f in RoleSpec.__dataclass_fields__}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"roles.{name} has unknown keys {unknown}; valid: {sorted(known)}")
    spec = RoleSpec(**dict(value))
    if spec._target_ == "???":
        raise ValueError(f"roles.{name}._target_ is required (package.module.ClassName)")
    return spec


def register_configs() -> None:
    ConfigStore.instance().store(name="rlsys_schema", node=RLConfig)
