"""Where a run's prompt rows come from: the built-in synthetic task (no download)."""

from __future__ import annotations


def load_task_rows(config) -> tuple[list[dict], list[dict]]:
    """(train rows, val rows), each row {"prompt", "ground_truth", "data_source"}."""
    data = config.data
    if data.task != "arithmetic":
        raise ValueError(f"data.task={data.task!r}: the built-in task is 'arithmetic'")
    from rlsys.tasks import make_arithmetic_dataset

    train = make_arithmetic_dataset(data.train_size, seed=config.trainer.seed, split="train")
    val = make_arithmetic_dataset(data.val_size, seed=0, split="val")  # same val set for every seed
    return train, val
