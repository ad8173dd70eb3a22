"""`<run_dir>/val_generations.jsonl`: every validation's samples, appended, one JSON row each.

    {"step": 10, "uid": "v3", "prompt": "12+7=", "response": "19</s>", "prompt_ids": [...],
     "response_ids": [...], "score": 1.0}

Rows of all validations stay (the `step` column tells them apart). A resumed run appends, so a
step validated before a kill and again after it appears twice, the later rows last. Text is
decoded with the run's tokenizer, special tokens kept and padding dropped (by the masks).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path


@functools.lru_cache(maxsize=4)
def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def generation_rows(step: int, batch, scores, tokenizer) -> list[dict]:
    """One row per sample of a validation batch (`prompts` left-padded, `responses` right-padded)."""
    prompts, responses = batch.batch["prompts"], batch.batch["responses"]
    prompt_mask = batch.batch["attention_mask"][:, : prompts.shape[1]].bool()
    # attention_mask, not response_mask: a multi-turn response shows its observations too
    response_mask = batch.batch["attention_mask"][:, prompts.shape[1]:].bool()
    rows = []
    for i in range(len(batch)):
        prompt_ids = prompts[i][prompt_mask[i]].tolist()
        response_ids = responses[i][response_mask[i]].tolist()
        rows.append({"step": step, "uid": str(batch.non_tensor_batch["uid"][i]),
                     "prompt": tokenizer.decode(prompt_ids), "response": tokenizer.decode(response_ids),
                     "prompt_ids": prompt_ids, "response_ids": response_ids, "score": float(scores[i])})
    return rows


def append_val_generations(path: Path, step: int, batch, scores, tokenizer) -> None:
    with open(path, "a") as f:
        for row in generation_rows(step, batch, scores, tokenizer):
            f.write(json.dumps(row) + "\n")


def read_val_generations(path: Path, step: int | None = None) -> list[dict]:
    """The rows of one validation step (default: the last step written), in the order written."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    step = rows[-1]["step"] if step is None else step
    return [r for r in rows if r["step"] == step]
