"""Write the built-in arithmetic task as parquet files in verl's layout, to show the format.

    python scripts/make_dataset.py --out data/arith [--train-size 4096 --val-size 128 --seed 1]
    python -m rlsys.main +recipe=ppo data.train_files=data/arith/train.parquet \
        data.val_files=data/arith/val.parquet

Each row: `prompt` = [{"role": "user", "content": "12+7="}], `data_source` = "arithmetic",
`reward_model` = {"style": "rule", "ground_truth": "19"}, `extra_info` = {"split", "index"}.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def to_verl_records(rows: list[dict], split: str) -> list[dict]:
    """Rows {"prompt", "ground_truth", "data_source"} -> records in verl's column layout."""
    return [
        {
            "data_source": row["data_source"],
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "reward_model": {"style": "rule", "ground_truth": row["ground_truth"]},
            "extra_info": {"split": split, "index": index},
        }
        for index, row in enumerate(rows)
    ]


def write_parquet(records: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="directory for train.parquet and val.parquet")
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--val-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1, help="which train problems are drawn (val uses seed 0)")
    args = parser.parse_args(argv)

    from rlsys.tasks import make_arithmetic_dataset

    splits = {"train": make_arithmetic_dataset(args.train_size, seed=args.seed, split="train"),
              "val": make_arithmetic_dataset(args.val_size, seed=0, split="val")}
    for split, rows in splits.items():
        path = args.out / f"{split}.parquet"
        write_parquet(to_verl_records(rows, split), path)
        print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
