"""`load_task_rows` (files vs built-in task) and `scripts/make_dataset.py`'s verl layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlsys.config.schema import RLConfig
from rlsys.data.files import load_prompt_rows
from rlsys.data.tasks import load_task_rows
from rlsys.tasks import make_arithmetic_dataset

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make_dataset.py"


def make_dataset_module():
    spec = importlib.util.spec_from_file_location("make_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(**data):
    cfg = OmegaConf.structured(RLConfig)
    cfg.data.train_size, cfg.data.val_size = 64, 16
    for key, value in data.items():
        cfg.data[key] = value
    return cfg


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("arith")
    make_dataset_module().main(["--out", str(out), "--train-size", "64", "--val-size", "16"])
    return out


def test_make_dataset_writes_verl_layout(dataset_dir):
    import pyarrow.parquet as pq

    table = pq.read_table(dataset_dir / "train.parquet")
    assert table.num_rows == 64
    assert set(table.column_names) == {"data_source", "prompt", "reward_model", "extra_info"}
    first = table.slice(0, 1).to_pylist()[0]
    expected = make_arithmetic_dataset(64, seed=1, split="train")[0]
    assert first["prompt"] == [{"role": "user", "content": expected["prompt"]}]
    assert first["reward_model"]["ground_truth"] == expected["ground_truth"]
    assert first["data_source"] == "arithmetic" and first["extra_info"] == {"split": "train", "index": 0}


def test_files_round_trip_to_builtin_rows(dataset_dir, tokenizer):
    rows, num_filtered = load_prompt_rows(dataset_dir / "val.parquet", tokenizer, 16)
    assert num_filtered == 0
    builtin = make_arithmetic_dataset(16, seed=0, split="val")
    assert [{k: r[k] for k in ("prompt", "ground_truth", "data_source")} for r in rows] == builtin


def test_load_task_rows_from_files(dataset_dir, tokenizer):
    cfg = config(train_files=str(dataset_dir / "train.parquet"), val_files=[str(dataset_dir / "val.parquet")])
    train, val = load_task_rows(cfg, tokenizer)
    assert len(train) == 64 and len(val) == 16
    assert train[0]["extra_info"]["split"] == "train" and val[0]["extra_info"]["split"] == "val"


def test_load_task_rows_builtin_without_files(tokenizer):
    train, val = load_task_rows(config(), tokenizer)
    assert train == make_arithmetic_dataset(64, seed=1, split="train")
    assert val == make_arithmetic_dataset(16, seed=0, split="val")
    assert load_task_rows(config()) == (train, val)  # the built-in task needs no tokenizer


def test_load_task_rows_needs_both_file_keys(dataset_dir, tokenizer):
    with pytest.raises(ValueError, match="data.val_files must be set"):
        load_task_rows(config(train_files=str(dataset_dir / "train.parquet")), tokenizer)
    with pytest.raises(ValueError, match="data.val_files is set but data.train_files is not"):
        load_task_rows(config(val_files=str(dataset_dir / "val.parquet")), tokenizer)


def test_load_task_rows_applies_data_settings(dataset_dir, tokenizer):
    cfg = config(train_files=str(dataset_dir / "train.parquet"), val_files=str(dataset_dir / "val.parquet"),
                 max_prompt_length=5, truncation="error")
    with pytest.raises(ValueError, match="train.parquet row .*data.max_prompt_length=5"):
        load_task_rows(cfg, tokenizer)
