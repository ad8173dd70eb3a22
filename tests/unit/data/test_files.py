"""`load_prompt_rows`: parquet and jsonl in verl's layout, rendering, validation, length policy."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlsys.data.files import load_prompt_rows, truncate_left
from rlsys.data.prompts import PromptLoader, tokenize_prompts
from rlsys.models.tiny import build_tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def verl_record(content: str, truth: str, source: str = "gsm8k", extra_info=None) -> dict:
    """One row in verl's layout."""
    return {"data_source": source, "prompt": [{"role": "user", "content": content}],
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": extra_info if extra_info is not None else {"split": "train", "index": 0}}


def write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_jsonl(path, records, blank_lines=False):
    lines = [json.dumps(r) for r in records]
    path.write_text(("\n\n" if blank_lines else "\n").join(lines) + "\n")
    return path


def test_parquet_and_jsonl_rows(tmp_path, tokenizer):
    parquet = write_parquet(tmp_path / "a.parquet", [verl_record("1+1=", "2", extra_info={"split": "train",
                                                                                         "index": 7}),
                                                     verl_record("2+2=", "4", source="math")])
    jsonl = write_jsonl(tmp_path / "b.jsonl", [{**verl_record("3+3=", "6"), "reward_model": {"ground_truth": 6}}],
                        blank_lines=True)
    rows, num_filtered = load_prompt_rows([parquet, str(jsonl)], tokenizer, max_prompt_length=16)
    assert num_filtered == 0
    assert rows == [
        {"prompt": "1+1=", "ground_truth": "2", "data_source": "gsm8k", "extra_info": {"split": "train", "index": 7}},
        {"prompt": "2+2=", "ground_truth": "4", "data_source": "math", "extra_info": {"split": "train", "index": 0}},
        {"prompt": "3+3=", "ground_truth": "6", "data_source": "gsm8k", "extra_info": {"split": "train", "index": 0}},
    ]
    assert load_prompt_rows(jsonl, tokenizer, 16)[0] == rows[2:]  # one path, not a list


def test_extra_info_column_is_optional(tmp_path, tokenizer):
    record = verl_record("1+1=", "2")
    del record["extra_info"]
    rows, _ = load_prompt_rows(write_jsonl(tmp_path / "a.jsonl", [record]), tokenizer, 16)
    assert rows[0]["extra_info"] == {}


def test_chat_template_applied_when_present(tmp_path, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="}]
    path = write_jsonl(tmp_path / "a.jsonl", [{**verl_record("", "2"), "prompt": messages}])
    plain, _ = load_prompt_rows(path, tokenizer, 64)
    assert plain[0]["prompt"] == "1+1="  # no template: user contents only
    chat_tokenizer = build_tokenizer()
    chat_tokenizer.chat_template = TEMPLATE
    templated, _ = load_prompt_rows(path, chat_tokenizer, 64)
    raw, _ = load_prompt_rows(path, chat_tokenizer, 64, apply_chat_template=False)
    assert templated[0]["prompt"] == "<system>Be brief.<user>1+1=<assistant>"
    assert raw[0]["prompt"] == "1+1="


def test_custom_prompt_key(tmp_path, tokenizer):
    record = verl_record("1+1=", "2")
    record["question"] = record.pop("prompt")
    path = write_jsonl(tmp_path / "a.jsonl", [record])
    assert load_prompt_rows(path, tokenizer, 16, prompt_key="question")[0][0]["prompt"] == "1+1="
    with pytest.raises(ValueError, match="missing column 'prompt'"):
        load_prompt_rows(path, tokenizer, 16)


def _malformed(record: dict, change: str) -> dict:
    record = dict(record)
    if change == "no_data_source":
        del record["data_source"]
    elif change == "prompt_is_str":
        record["prompt"] = "1+1="
    elif change == "empty_prompt":
        record["prompt"] = []
    elif change == "empty_content":
        record["prompt"] = [{"role": "user", "content": "   "}]
    elif change == "no_ground_truth":
        record["reward_model"] = {"style": "rule"}
    elif change == "extra_info_list":
        record["extra_info"] = [1, 2]
    elif change == "message_without_role":
        record["prompt"] = [{"content": "1+1="}]
    return record


@pytest.mark.parametrize("change, message", [
    ("no_data_source", "missing column 'data_source'"), ("prompt_is_str", "list of chat messages"),
    ("empty_prompt", "non-empty list"), ("empty_content", "no non-empty user message"),
    ("no_ground_truth", "ground_truth"), ("extra_info_list", "'extra_info' must be a dict"),
    ("message_without_role", "message 0"),
])
def test_malformed_row_names_file_and_row(tmp_path, tokenizer, change, message):
    good = verl_record("1+1=", "2")
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good, _malformed(good, change)])
    with pytest.raises(ValueError, match=message) as info:
        load_prompt_rows(path, tokenizer, 16)
    assert f"{path} row 2 (line 3)" in str(info.value)


def test_malformed_parquet_row_names_file_and_row(tmp_path, tokenizer):
    good = verl_record("1+1=", "2")
    bad = {**good, "data_source": ""}
    path = write_parquet(tmp_path / "bad.parquet", [good, bad])
    with pytest.raises(ValueError, match=f"{path} row 1: 'data_source' must be a non-empty str"):
        load_prompt_rows(path, tokenizer, 16)


def test_file_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="does not exist"):
        load_prompt_rows(tmp_path / "missing.parquet", tokenizer, 16)
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(ValueError, match="unsupported suffix '.csv'"):
        load_prompt_rows(tmp_path / "a.csv", tokenizer, 16)
    (tmp_path / "b.jsonl").write_text(json.dumps(verl_record("1+1=", "2")) + "\n{not json\n")
    with pytest.raises(ValueError, match="b.jsonl row 1 \\(line 2\\): not valid JSON"):
        load_prompt_rows(tmp_path / "b.jsonl", tokenizer, 16)
    with pytest.raises(ValueError, match="data.truncation='left'"):
        load_prompt_rows(tmp_path / "b.jsonl", tokenizer, 16, truncation="left")


@pytest.fixture
def mixed_lengths(tmp_path):
    """Prompts of 4, 12 and 20 characters (= tokens for the tiny tokenizer)."""
    return write_parquet(tmp_path / "mixed.parquet", [verl_record("1+1=", "2"), verl_record("abcdefgh1+1=", "2"),
                                                       verl_record("0123456789abcdefgh1=", "2")])


def test_filter_drops_long_prompts_and_counts_them(mixed_lengths, tokenizer, capsys):
    rows, num_filtered = load_prompt_rows(mixed_lengths, tokenizer, max_prompt_length=12, truncation="filter")
    assert num_filtered == 1 and [r["prompt"] for r in rows] == ["1+1=", "abcdefgh1+1="]
    assert "filtered 1 of 3 prompts" in capsys.readouterr().out


def test_truncate_keeps_the_end_of_long_prompts(mixed_lengths, tokenizer):
    rows, num_filtered = load_prompt_rows(mixed_lengths, tokenizer, max_prompt_length=8, truncation="truncate")
    assert num_filtered == 0
    assert [r["prompt"] for r in rows] == ["1+1=", "efgh1+1=", "cdefgh1="]
    batch = tokenize_prompts(rows, tokenizer, max_prompt_length=8)  # the loader accepts them
    assert batch.batch["prompt_mask"].sum(dim=1).tolist() == [4, 8, 8]


def test_error_policy_names_row(mixed_lengths, tokenizer):
    with pytest.raises(ValueError, match="row 1: prompt has 12 tokens > data.max_prompt_length=8"):
        load_prompt_rows(mixed_lengths, tokenizer, max_prompt_length=8, truncation="error")


def test_everything_filtered_is_an_error(mixed_lengths, tokenizer):
    with pytest.raises(ValueError, match="no prompts left.*3 filtered"):
        load_prompt_rows(mixed_lengths, tokenizer, max_prompt_length=2)


def test_truncate_left_fits_the_limit(tokenizer):
    text = "the quick brown fox"
    for limit in (1, 5, 18):
        kept = truncate_left(text, tokenizer, limit)
        assert text.endswith(kept) and len(tokenizer(kept, add_special_tokens=False)["input_ids"]) == limit


def test_file_rows_feed_the_prompt_loader_with_extra_info(tmp_path, tokenizer):
    records = [verl_record(f"{i}+1=", str(i + 1), extra_info={"index": i}) for i in range(6)]
    rows, _ = load_prompt_rows(write_parquet(tmp_path / "t.parquet", records), tokenizer, 8)
    batch = PromptLoader(rows, tokenizer, batch_size=4, max_prompt_length=8, seed=0).next_batch()
    extra = batch.non_tensor_batch["extra_info"]
    assert extra.shape == (4,) and all(isinstance(e, dict) for e in extra)
    for truth, info in zip(batch.non_tensor_batch["ground_truth"], extra):
        assert truth == str(info["index"] + 1)  # extra_info stays aligned with its row
