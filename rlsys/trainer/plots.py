"""reward_curve.png: training score and validation score against step, from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def write_reward_curve(run_dir: Path) -> Path | None:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["critic/score/mean"]) for r in rows if "critic/score/mean" in r]
    val = [(r["step"], r["val/score"]) for r in rows if "val/score" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train score (critic/score/mean)", alpha=0.7)
    if val:
        ax.plot(*zip(*val), "o-", label="validation score (val/score)")
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(run_dir) / "reward_curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
