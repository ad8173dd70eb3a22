"""Prompt datasets from parquet / jsonl files in verl's column layout.

Each file row holds `prompt` (chat messages `[{"role": "user", "content": "..."}]`),
`data_source` (str, picks the reward), `reward_model` (dict with `ground_truth`) and
optionally `extra_info` (dict, passed to the reward function). `load_prompt_rows` renders
each prompt to text (the tokenizer's chat template with the generation prompt, or the user
messages joined by newlines when there is no template) and returns rows
`{"prompt", "ground_truth", "data_source", "extra_info"}` for `rlsys.data.prompts`.

    rows, num_filtered = load_prompt_rows(["train.parquet"], tokenizer, max_prompt_length=512)

Prompts over `max_prompt_length` tokens (counted without special tokens, as the loader
tokenizes) are dropped ("filter"), cut from the left ("truncate") or rejected ("error").
`python scripts/make_dataset.py --out DIR` writes an example of the layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TRUNCATION_CHOICES = ("filter", "truncate", "error")
FILE_SUFFIXES = (".parquet", ".jsonl")


def _as_path_list(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def read_records(path: Path) -> list[tuple[str, object]]:
    """All rows of one parquet or jsonl file as (label, plain Python value) pairs.

    The label names the row for error messages: "row i" (0-based), plus "(line n)" for jsonl,
    whose blank lines are skipped.
    """
    if not path.is_file():
        raise ValueError(f"data file {path} does not exist")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"row {i}", record) for i, record in enumerate(pq.read_table(path).to_pylist())]
    if path.suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                label = f"row {len(records)} (line {line_number})"
                try:
                    records.append((label, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} {label}: not valid JSON ({exc})") from exc
        return records
    raise ValueError(f"data file {path}: unsupported suffix {path.suffix!r}; expected one of {FILE_SUFFIXES}")


def _checked_messages(record: dict, prompt_key: str, where: str) -> list[dict]:
    if prompt_key not in record:
        raise ValueError(f"{where}: missing column {prompt_key!r} (data.prompt_key)")
    messages = record[prompt_key]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{where}: column {prompt_key!r} must be a non-empty list of chat messages "
                         f"[{{'role': ..., 'content': ...}}], got {type(messages).__name__} {messages!r}")
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: message {k} of {prompt_key!r} must be a dict with str 'role' and "
                             f"'content', got {message!r}")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise ValueError(f"{where}: column {prompt_key!r} has no non-empty user message")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _checked_fields(record: dict, where: str) -> tuple[str, str, dict]:
    """(data_source, ground_truth, extra_info) of one record, validated."""
    for column in ("data_source", "reward_model"):
        if column not in record:
            raise ValueError(f"{where}: missing column {column!r}")
    data_source, reward_model = record["data_source"], record["reward_model"]
    if not isinstance(data_source, str) or not data_source:
        raise ValueError(f"{where}: 'data_source' must be a non-empty str, got {data_source!r}")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise ValueError(f"{where}: 'reward_model' must be a dict with 'ground_truth', got {reward_model!r}")
    ground_truth = reward_model["ground_truth"]
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        raise ValueError(f"{where}: reward_model.ground_truth must be a str or number, got {ground_truth!r}")
    extra_info = record.get("extra_info")  # optional column
    if extra_info is None:
        extra_info = {}
    if not isinstance(extra_info, dict):
        raise ValueError(f"{where}: 'extra_info' must be a dict, got {type(extra_info).__name__}")
    return data_source, str(ground_truth), extra_info


def render_prompt(messages: list[dict], tokenizer, apply_chat_template: bool) -> str:
    """Chat-template text with the generation prompt, or the user contents joined by newlines."""
    if apply_chat_template and getattr(tokenizer, "chat_template", None) is not None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


def truncate_left(text: str, tokenizer, max_tokens: int) -> str:
    """The longest suffix of `text` (cut at a token boundary) that tokenizes to <= max_tokens.

    Cuts at the character offset of a token so the kept text re-tokenizes (as the loader will
    do) to at most `max_tokens`; where a cut changes merges, one more token is dropped.
    Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("data.truncation=truncate needs a fast (Rust) tokenizer; use filter or error")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    cut = len(offsets) - max_tokens
    while cut < len(offsets):
        kept = text[offsets[cut][0]:]
        num_tokens = len(tokenizer(kept, add_special_tokens=False)["input_ids"])
        if num_tokens <= max_tokens:
            return kept
        cut += num_tokens - max_tokens
    raise ValueError(f"cannot cut {text[:80]!r}... to {max_tokens} tokens at a token boundary")


def _rows_of_file(path: Path, tokenizer, max_prompt_length: int, prompt_key: str,
                  apply_chat_template: bool, truncation: str) -> tuple[list[dict], int]:
    rows = []
    for label, record in read_records(path):
        where = f"{path} {label}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with columns, got {type(record).__name__}")
        messages = _checked_messages(record, prompt_key, where)
        data_source, ground_truth, extra_info = _checked_fields(record, where)
        text = render_prompt(messages, tokenizer, apply_chat_template)
        if not text.strip():
            raise ValueError(f"{where}: the rendered prompt is empty")
        rows.append({"prompt": text, "ground_truth": ground_truth, "data_source": data_source,
                     "extra_info": extra_info, "_where": where})
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]] \
        if rows else []
    kept, num_filtered = [], 0
    for row, length in zip(rows, lengths):
        where = row.pop("_where")
        if length <= max_prompt_length:
            kept.append(row)
        elif truncation == "filter":
            num_filtered += 1
        elif truncation == "truncate":
            row["prompt"] = truncate_left(row["prompt"], tokenizer, max_prompt_length)
            kept.append(row)
        else:
            raise ValueError(f"{where}: prompt has {length} tokens > data.max_prompt_length={max_prompt_length} "
                             "(data.truncation=error; use filter or truncate)")
    return kept, num_filtered


def load_prompt_rows(paths, tokenizer, max_prompt_length: int, prompt_key: str = "prompt",
                     apply_chat_template: bool = True, truncation: str = "filter") -> tuple[list[dict], int]:
    """(rows, num_filtered) from one path or a list of parquet/jsonl files, in file order.

    Raises ValueError naming the file and row (0-based) for a malformed row, and naming the
    key for a bad `truncation` or when no prompt is left after filtering.
    """
    if truncation not in TRUNCATION_CHOICES:
        raise ValueError(f"data.truncation={truncation!r}: expected one of {TRUNCATION_CHOICES}")
    if max_prompt_length < 1:
        raise ValueError(f"data.max_prompt_length={max_prompt_length}: must be >= 1")
    path_list = _as_path_list(paths)
    if not path_list:
        raise ValueError("no data files given")
    rows, num_filtered = [], 0
    for path in path_list:
        file_rows, file_filtered = _rows_of_file(path, tokenizer, max_prompt_length, prompt_key,
                                                 apply_chat_template, truncation)
        if file_filtered:
            print(f"[data] {path}: filtered {file_filtered} of {len(file_rows) + file_filtered} prompts "
                  f"longer than data.max_prompt_length={max_prompt_length} tokens", flush=True)
        rows.extend(file_rows)
        num_filtered += file_filtered
    if not rows:
        raise ValueError(f"no prompts left in {[str(p) for p in path_list]} ({num_filtered} filtered as longer "
                         f"than data.max_prompt_length={max_prompt_length})")
    return rows, num_filtered
