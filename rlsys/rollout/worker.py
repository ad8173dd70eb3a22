"""Rollout role: owns one generation engine (vLLM by default, transformers `generate` as
`rollout.name=hf`) and turns a DataProto of prompts into a DataProto of sampled responses.

With tensor parallelism t, every t-th rank of the group leads one engine that spans its t
devices; the other ranks hold none and receive no prompts (`dispatch_to_engines` splits a
batch over the leaders only; the driver sets `engine_tp_size` on the group).
"""

from __future__ import annotations

import os

import torch

from rlsys.protocol import DataProto, pad_dataproto_to_divisor
from rlsys.single_controller import Dispatch, Worker, register
from rlsys.workers import model_utils


def left_pad_to(t: torch.Tensor, length: int, value: int) -> torch.Tensor:
    """Left-pad dim 1 of `t` to `length` (rollout chunks must share the prompt width to concat)."""
    missing = length - t.shape[1]
    if missing < 0:
        raise ValueError(f"prompt width {t.shape[1]} exceeds data.max_prompt_length={length}")
    return torch.nn.functional.pad(t, (missing, 0), value=value) if missing else t


def rows_of(prompts: DataProto) -> list[dict]:
    """Each prompt's non-tensor fields (ground_truth, data_source, extra_info, uid) as a dict."""
    fields = prompts.non_tensor_batch
    return [{key: values[i] for key, values in fields.items()} for i in range(len(prompts))]


PAD_KEY = "rlsys_padded_prompts"  # meta_info of the last engine's chunk: prompts added to even out


def dispatch_to_engines(wg, prompts: DataProto):
    """Equal chunks to the engine-leading ranks (every `engine_tp_size`-th), empty to the rest.

    Pads with copies of the first rows so the prompts split evenly; the last engine drops
    what it generated for them.
    """
    tp = getattr(wg, "engine_tp_size", 1)
    if not isinstance(prompts, DataProto):
        raise ValueError(f"prompts must be a DataProto, got {type(prompts).__name__}")
    padded, pad = pad_dataproto_to_divisor(prompts, wg.world_size // tp)
    chunks = padded.chunk(wg.world_size // tp)
    chunks[-1].meta_info[PAD_KEY] = pad
    empty = padded[:0]
    return ([chunks[r // tp] if r % tp == 0 else empty for r in range(wg.world_size)],), {}


def collect_from_engines(wg, outputs: list) -> DataProto:
    tp = getattr(wg, "engine_tp_size", 1)
    return DataProto.concat([out for rank, out in enumerate(outputs) if rank % tp == 0])


class RolloutWorker(Worker):
    def __init__(self, config, model_path: str):
        super().__init__()
        self.config = config
        self.model_path = model_path
        self.engine = None
        self.sleep_mode = False  # GPU colocate with rollout.free_cache_engine: sleep between rollouts
        self.asleep: set[str] = set()  # vLLM memory tags now offloaded/freed (sleep mode)

    @property
    def tp_size(self) -> int:
        return self.config.rollout.tensor_parallel_size

    @property
    def leads_engine(self) -> bool:
        return self.rank % self.tp_size == 0

    @property
    def engine_index(self) -> int:
        return self.rank // self.tp_size

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def accelerator_ids(self) -> list[str]:
        """The GPU ids Ray gave this rank ([] on CPU)."""
        import ray

        return [str(i) for i in ray.get_gpu_ids()]

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_engine(self, ids_by_rank: list[list[str]] | None = None) -> None:
        """Create the engine on leader ranks. `ids_by_rank` (GPU ids of every rollout rank)
        lets a tensor-parallel leader's engine processes see its peers' GPUs."""
        cfg = self.config
        self.device = model_utils.resolve_device(cfg.trainer.device)
        if not self.leads_engine:
            return
        if self.tp_size > 1 and ids_by_rank and any(ids_by_rank):
            # vLLM starts its TP workers as child processes that inherit this variable;
            # this process's own CUDA context (already created) keeps its single GPU.
            peers = ids_by_rank[self.rank : self.rank + self.tp_size]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(i for ids in peers for i in ids)
        dtype = model_utils.resolve_dtype(cfg.model.dtype, self.device)
        if cfg.rollout.name == "hf":
            from rlsys.rollout.hf_engine import HFEngine

            from rlsys.rollout.hf_receiver import HFWeightReceiver

            self.engine = HFEngine.from_pretrained(self.model_path, dtype=dtype, device=str(self.device))
            self.receiver = HFWeightReceiver(self.engine.model)
            return
        from rlsys.rollout.vllm_engine import VLLMEngine

        self.sleep_mode = self.device.type == "cuda" and cfg.placement == "colocate" and cfg.rollout.free_cache_engine
        self.engine = VLLMEngine(
            self.model_path, dtype=str(dtype).removeprefix("torch."),
            tensor_parallel_size=self.tp_size, max_model_len=cfg.rollout.max_model_len,
            seed=cfg.trainer.seed + self.engine_index, enforce_eager=cfg.rollout.enforce_eager,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, enable_sleep_mode=self.sleep_mode,
            kv_cache_space_gb=cfg.rollout.kv_cache_space_gb, owner=f"rollout rank {self.rank}",
        )
        self.release_memory()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def shutdown_engine(self) -> None:
        """Stop this rank's engine (its engine-core and worker processes, which unlink vLLM's
        `psm_*` shared-memory queues); the driver calls it in every exit path before Ray stops."""
        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    def _sampling(self, validate: bool) -> dict:
        r = self.config.rollout
        return {
            "n": r.val_n if validate else r.n,
            "temperature": r.val_temperature if validate else r.temperature,
            "top_p": 1.0 if validate else r.top_p,
            "top_k": -1 if validate else r.top_k,
            "max_tokens": self.config.data.max_response_length,
            "logprobs": True,
        }

    @register(dispatch_mode={"dispatch_fn": dispatch_to_engines, "collect_fn": collect_from_engines})
    def generate_sequences(self, prompts: DataProto) -> DataProto | None:
        """prompts: `prompt_ids`/`prompt_mask` (batch, P) -> rollout tensors, n rows per prompt."""
        if self.engine is None:
            if len(prompts) == 0:  # a tensor-parallel peer: its leader's engine covers it
                return None
            raise RuntimeError(f"rollout rank {self.rank} leads no engine (tensor_parallel_size={self.tp_size})")
        padded = int(prompts.meta_info.get(PAD_KEY, 0))
        ids, mask = prompts.batch["prompt_ids"], prompts.batch["prompt_mask"]
        prompt_lists = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        self.wake()
        sampling = self._sampling(bool(prompts.meta_info.get("validate")))
        if prompts.meta_info.get("seed") is not None:  # per-step seeds: runs replay exactly
            sampling["seed"] = int(prompts.meta_info["seed"]) + self.engine_index * 1_000_003
        non_tensors = {}
        if self.config.rollout.multi_turn.enable:  # multi-turn agent rollouts: rlsys/rollout/agent
            out, non_tensors = self.agent_loop().run(self.engine, prompt_lists, rows_of(prompts), sampling)
        else:
            out = self.engine.generate(prompt_lists, sampling)
        self.release_memory()
        width = self.config.data.max_prompt_length
        pad = self.engine.pad_token_id
        out["prompts"] = left_pad_to(out["prompts"], width, pad)
        out["input_ids"] = left_pad_to(out["input_ids"], width + out["responses"].shape[1], pad)
        out["attention_mask"] = left_pad_to(out["attention_mask"], out["input_ids"].shape[1], 0)
        out["position_ids"] = (out["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        result = DataProto.from_dict(out, non_tensors=non_tensors or None)
        return result[: len(result) - padded * (len(result) // len(prompts))] if padded else result

    def agent_loop(self):
        """The multi-turn loop (rollout.multi_turn), built on first use."""
        if getattr(self, "_agent_loop", None) is None:
            from rlsys.rollout.agent import AgentLoop

            self._agent_loop = AgentLoop.from_config(self.config, self.model_path)
        return self._agent_loop

    @register(dispatch_mode={"dispatch_fn": dispatch_to_engines, "collect_fn": collect_from_engines},
              blocking=False)
    def generate_sequences_async(self, prompts: DataProto) -> DataProto | None:
        """`generate_sequences`, but the group call returns one Ray ref per rank at once
        (trainer.max_staleness >= 1: rlsys/trainer/async_trainer.py collects them); the output's
        meta_info `rlsys_generate_end_s` (time.time()) is when this engine finished."""
        import time

        out = self.generate_sequences(prompts)
        if out is not None:
            out.meta_info["rlsys_generate_end_s"] = time.time()
        return out

    # ---- sleep mode (GPU colocate): free the KV cache while the actor trains ------------
    # vLLM 0.26's wake_up remaps every tag it is given, awake or not (0.32 checks); waking "weights" twice
    # (once for a sync, again before generating) fails inside the CUDA driver (cuMemMap on
    # a mapped range: "invalid argument" at cumem_allocator.cpp). So we track which tags
    # are asleep and wake only those.
    SLEEP_TAGS = ("weights", "kv_cache")

    def release_memory(self) -> None:
        if self.sleep_mode and not self.asleep:
            self.engine.sleep(level=1)
            self.asleep = set(self.SLEEP_TAGS)

    def wake(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        """Wake the given tags that are asleep, in vLLM's order (weights before KV cache)."""
        todo = [t for t in self.SLEEP_TAGS if t in tags and t in self.asleep]
        if todo:
            # The colocated actor shares this process: hand its cached (freed) blocks back to
            # the driver first, or vLLM cannot map the KV cache after a big update (OOM in wake_up).
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.engine.wake_up(tags=todo)
            self.asleep -= set(todo)

    # ---- weight sync: receiver calls run on every vLLM worker of this engine ------------
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def call_engine_workers(self, method: str, *args):
        """Run a `WeightSyncExtension` method on this engine's workers; [] on non-leader ranks.

        Broadcast groups span all engines, so each engine's ranks are offset by its index.
        """
        if self.engine is None:
            return []
        if method == "rlsys_init_group":
            transport, info = args
            info = dict(info, rank_offset=info["rank_offset"] + self.engine_index * self.tp_size)
            args = (transport, info)
        if method == "rlsys_receive":
            self.wake(("weights",))
        if self.config.rollout.name == "hf":
            return self.receiver.call(method, *args)
        result = self.engine.call_workers(method, *args)
        if method == "rlsys_receive":
            self.engine.after_weight_sync()
        return result
