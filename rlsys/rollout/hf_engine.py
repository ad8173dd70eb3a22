"""Fallback rollout engine on `transformers.generate`, with the vLLM engine's output contract.

Slow but dependency-light: useful where vLLM is unavailable, and as the reference in tests
(greedy decoding in fp32 must match vLLM token for token on the tiny model). Samples of a
prompt are adjacent (`num_return_sequences` expands prompt-major, like vLLM's `n`).
Log-probs come from the scores `generate` actually sampled from (after temperature /
top-k / top-p), i.e. vLLM's "processed_logprobs"; for greedy decoding, the raw softmax.
A response ends at its first eos / stop token (included); with stop *strings*, rows that
stopped early are recognised by their trailing pad tokens. `seed` reseeds torch's global
RNG: samples are reproducible, but not equal to vLLM's.
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlsys.rollout.outputs import Sampling, pack_rollout


class HFEngine:
    """Generates with a (possibly shared) `transformers` causal LM."""

    def __init__(self, model: torch.nn.Module, pad_token_id: int, eos_token_ids: Sequence[int],
                 tokenizer=None):
        self.model = model
        self.pad_token_id = int(pad_token_id)
        self.eos_token_ids = [int(t) for t in eos_token_ids]
        self.tokenizer = tokenizer

    @staticmethod
    def from_pretrained(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> "HFEngine":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id]
        return HFEngine(model, pad, eos_ids, tokenizer)

    def _left_pad(self, prompt_token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(p) for p in prompt_token_ids)
        ids = torch.full((len(prompt_token_ids), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompt_token_ids):
            ids[row, length - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, length - len(prompt):] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def _generate_kwargs(self, s: Sampling) -> dict:
        kwargs = dict(max_new_tokens=s.max_tokens, num_return_sequences=s.n,
                      eos_token_id=self.eos_token_ids + list(s.stop_token_ids),
                      pad_token_id=self.pad_token_id, output_scores=True,
                      return_dict_in_generate=True, min_new_tokens=0)
        if s.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p,
                          top_k=s.top_k if s.top_k > 0 else None)
        if s.stop:
            if self.tokenizer is None:
                raise ValueError("sampling 'stop' strings need the HF engine to have a tokenizer")
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        return kwargs

    def _response_length(self, generated: torch.Tensor, stop_ids: set[int], strip_pads: bool) -> int:
        tokens = generated.tolist()
        for index, token in enumerate(tokens):
            if token in stop_ids:
                return index + 1
        length = len(tokens)
        while strip_pads and length > 0 and tokens[length - 1] == self.pad_token_id:
            length -= 1
        return length

    @torch.no_grad()
    def generate(self, prompt_token_ids: list[list[int]], sampling: dict) -> dict[str, torch.Tensor]:
        """Same contract as `VLLMEngine.generate` (see `rlsys.rollout.outputs`)."""
        s = Sampling.from_dict(sampling)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        ids, mask = self._left_pad(prompt_token_ids)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(input_ids=ids, attention_mask=mask, **self._generate_kwargs(s))
        finally:
            self.model.train(was_training)
        generated = out.sequences[:, ids.shape[1]:].cpu()
        log_probs_all = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in out.scores], 1)
        token_log_probs = log_probs_all.cpu().gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        stop_ids = set(self.eos_token_ids) | set(s.stop_token_ids)
        responses, log_probs = [], []
        for row in range(generated.shape[0]):
            length = self._response_length(generated[row], stop_ids, strip_pads=bool(s.stop))
            responses.append(generated[row, :length].tolist())
            log_probs.append(token_log_probs[row, :length].tolist())
        return pack_rollout(prompt_token_ids, responses, log_probs if s.logprobs else None,
                            s.n, s.max_tokens, self.pad_token_id)
