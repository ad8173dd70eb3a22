"""Rollout engines: vLLM (`VLLMEngine`) and a transformers fallback (`HFEngine`).

Both expose `generate(prompt_token_ids, sampling) -> dict of padded tensors` with the
contract documented in `rlsys.rollout.outputs`. Engines are imported lazily so that
importing this package does not import vLLM.
"""

from rlsys.rollout.outputs import Sampling, pack_rollout

__all__ = ["Sampling", "pack_rollout", "VLLMEngine", "HFEngine"]


def __getattr__(name: str):
    if name == "VLLMEngine":
        from rlsys.rollout.vllm_engine import VLLMEngine

        return VLLMEngine
    if name == "HFEngine":
        from rlsys.rollout.hf_engine import HFEngine

        return HFEngine
    raise AttributeError(name)
