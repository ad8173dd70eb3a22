"""Hydra callback for `-m` sweeps: after the last job, write `sweep_summary.csv` (one row per
job: overrides, final validation score, wall time) in the sweep dir and print it as a table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def collect_sweep_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").exists()):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = [line.removeprefix("- ").strip() for line in overrides_file.read_text().splitlines()
                     if line.startswith("- ")] if overrides_file.exists() else []
        summary_file = job_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        rows.append({
            "job": job_dir.name,
            "overrides": " ".join(overrides),
            "val_score_final": summary.get("val_score_final"),
            "wall_seconds": summary.get("wall_seconds"),
            "status": "ok" if summary else "failed",
        })
    return rows


def write_sweep_summary(sweep_dir: Path) -> Path:
    rows = collect_sweep_rows(sweep_dir)
    out = Path(sweep_dir) / "sweep_summary.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["job", "overrides", "val_score_final", "wall_seconds", "status"])
        writer.writeheader()
        writer.writerows(rows)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep summary ({out})")
    for column in ("job", "overrides", "val_score_final", "wall_seconds", "status"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    return out


class SweepSummaryCallback(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        write_sweep_summary(Path(config.hydra.sweep.dir))
