"""Where a run's prompt rows come from: data files (verl's layout) or the built-in synthetic task.

With `data.train_files` set, train and validation rows are read by `rlsys.data.files`
(`data.val_files` is then required); otherwise the built-in task `data.task` is generated
(no download), with `data.train_size` / `data.val_size` rows.
"""

from __future__ import annotations


def _rows_from_files(data, key: str, tokenizer) -> list[dict]:
    from rlsys.data.files import load_prompt_rows

    rows, _ = load_prompt_rows(getattr(data, key), tokenizer, data.max_prompt_length, prompt_key=data.prompt_key,
                               apply_chat_template=data.apply_chat_template, truncation=data.truncation)
    return rows


def load_task_rows(config, tokenizer=None) -> tuple[list[dict], list[dict]]:
    """(train rows, val rows), each row {"prompt", "ground_truth", "data_source"} (+ "extra_info"
    for rows from files). `tokenizer` renders and measures file prompts; the built-in task
    does not need it."""
    data = config.data
    if data.train_files:
        if not data.val_files:
            raise ValueError("data.val_files must be set when data.train_files is (one path or a list)")
        if tokenizer is None:
            raise TypeError("load_task_rows: a tokenizer is needed to load data.train_files")
        return _rows_from_files(data, "train_files", tokenizer), _rows_from_files(data, "val_files", tokenizer)
    if data.val_files:
        raise ValueError("data.val_files is set but data.train_files is not; set both or neither")
    if data.task == "calculator":  # the embedded tool task (rlsys/envs/calculator.py, +recipe=grpo_tools)
        from rlsys.envs.calculator import make_calculator_dataset

        return (make_calculator_dataset(data.train_size, seed=config.trainer.seed, split="train"),
                make_calculator_dataset(data.val_size, seed=0, split="val"))
    if data.task != "arithmetic":
        raise ValueError(f"data.task={data.task!r}: the built-in tasks are 'arithmetic' and 'calculator'")
    from rlsys.tasks import make_arithmetic_dataset

    train = make_arithmetic_dataset(data.train_size, seed=config.trainer.seed, split="train")
    val = make_arithmetic_dataset(data.val_size, seed=0, split="val")  # same val set for every seed
    return train, val
