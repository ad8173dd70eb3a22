"""Checkpoint and resume: every `trainer.save_freq` steps, one directory holds the whole run state.

    <ckpt_root>/global_step_<N>/
        actor/dcp/            model + optimizer, torch.distributed.checkpoint (one shard file per rank)
        actor/extra_state.pt  lr scheduler + update counter (rank 0)
        actor/hf/             save_pretrained + tokenizer: loads in transformers and vllm.LLM
        critic/               as actor/, without hf/ (when the run has a critic)
        trainer_state.json    step, dataloader position, KL coefficient, validation history
        rng_state.pt          the driver's python / numpy / torch RNG states
        COMPLETE              step number
        MANIFEST.json         files, sizes, SHA-256 checksums (rlsys.trainer.manifest), written last

A save writes into `<ckpt_root>/.tmp_global_step_<N>` and renames it into place, so a kill
mid-save leaves the previous checkpoint whole; `.tmp_*` leftovers are deleted at the next
start. A SIGINT or SIGTERM during a save is held until the save is complete (at most
`SIGNAL_DEFER_MAX_S`; a second one stops at once), then handled. `trainer.resume`: `auto`
continues from the newest complete checkpoint (fresh start if none), `disable` starts fresh,
anything else is the path of one `global_step_<N>` directory. Every checkpoint is verified
against its manifest before it is loaded: `auto` skips one that does not verify (printing which
and why) and takes the next newest, an explicit path that does not verify fails naming the file.
The worker-side writers live in `rlsys.workers.checkpoint_io`; `CheckpointManager` runs on the driver.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rlsys.trainer.manifest import CheckpointCorruptError, verify_manifest, write_manifest
from rlsys.trainer.signals import deferred_signals

STEP_PREFIX = "global_step_"
TMP_PREFIX = ".tmp_"
COMPLETE_MARKER = "COMPLETE"
CRASH_ENV = "RLSYS_TEST_CRASH_DURING_SAVE"  # test-only: os._exit mid-save at this step
CRASH_EXIT_CODE = 17
SAVE_SLEEP_ENV = "RLSYS_TEST_SLEEP_DURING_SAVE_S"  # test-only: sleep mid-save (after the actor's part)
SIGNAL_DEFER_MAX_S = 60.0  # a SIGINT/SIGTERM during a save waits at most this long for it to finish


# ---- driver side ------------------------------------------------------------------------
def checkpoint_step(path: Path) -> Optional[int]:
    """N for a directory named `global_step_<N>`, else None."""
    match = re.fullmatch(rf"{STEP_PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match else None


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in root.iterdir() if p.is_dir()]
    return sorted((s, p) for s, p in found if s is not None and (p / COMPLETE_MARKER).exists())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class CheckpointManager:
    """Saves and restores the run state; the trainer calls `should_save`/`save` and `resume`.

    `attach(trainer)` names the object whose `kl_ctrl.value` and `val_history` are saved too.
    """

    def __init__(self, trainer_cfg, root: Path, roles, train_loader, weight_sync):
        if trainer_cfg.max_ckpt_to_keep is not None and trainer_cfg.max_ckpt_to_keep < 1:
            raise ValueError(f"trainer.max_ckpt_to_keep={trainer_cfg.max_ckpt_to_keep} must be >= 1 or null")
        if not trainer_cfg.resume:
            raise ValueError("trainer.resume is empty: expected auto, disable or a checkpoint directory")
        self.cfg, self.root = trainer_cfg, Path(root)
        self.roles, self.train_loader, self.weight_sync = roles, train_loader, weight_sync
        self.trainer = None

    @classmethod
    def from_config(cls, config, run_dir: Path, roles, train_loader, weight_sync) -> "CheckpointManager":
        root = Path(config.trainer.default_local_dir or Path(run_dir) / "checkpoints")
        return cls(config.trainer, root, roles, train_loader, weight_sync)

    def attach(self, trainer) -> None:
        self.trainer = trainer

    def should_save(self, step: int) -> bool:
        """Every `save_freq` steps, and at the last step; never when save_freq <= 0."""
        freq = self.cfg.save_freq
        return freq > 0 and (step % freq == 0 or step == self.cfg.total_steps)

    # ---- save ---------------------------------------------------------------------------
    def save(self, step: int) -> Path:
        """Write `global_step_<step>`; SIGINT/SIGTERM meanwhile wait until it is complete (bounded)."""
        with deferred_signals(f"saving checkpoint {STEP_PREFIX}{step}", SIGNAL_DEFER_MAX_S):
            return self._save(step)

    def _save(self, step: int) -> Path:
        assert self.trainer is not None, "CheckpointManager.attach(trainer) before save"
        tmp = self.root / f"{TMP_PREFIX}{STEP_PREFIX}{step}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.roles.actor.save_checkpoint(str(tmp / "actor"))
        if os.environ.get(CRASH_ENV) == str(step):
            print(f"{CRASH_ENV}={step}: exiting in the middle of a save", flush=True)
            os._exit(CRASH_EXIT_CODE)
        time.sleep(float(os.environ.get(SAVE_SLEEP_ENV, "0")))  # test-only: widen the save for signal tests
        if self.roles.critic is not None:
            self.roles.critic.save_checkpoint(str(tmp / "critic"))
        self._save_driver_state(tmp, step)
        _write_file(tmp / COMPLETE_MARKER, f"{step}\n".encode())
        write_manifest(tmp)  # last: a checkpoint whose files do not match it is never loaded
        final = self._publish(tmp, self.root / f"{STEP_PREFIX}{step}")
        self.prune()
        return final

    def _save_driver_state(self, path: Path, step: int) -> None:
        state = {
            "step": step,
            "dataloader": self.train_loader.state_dict(),
            "kl_coef": self.trainer.kl_ctrl.value,
            "val_history": [list(item) for item in self.trainer.val_history],
        }
        _write_file(path / "trainer_state.json", json.dumps(state, indent=2).encode())
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        torch.save(rng, path / "rng_state.pt")

    def _publish(self, tmp: Path, final: Path) -> Path:
        """Rename the finished temp dir into place (replacing an older save of the same step)."""
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old_{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync_dir(self.root)
        return final

    def prune(self) -> list[Path]:
        """Delete the oldest complete checkpoints beyond `trainer.max_ckpt_to_keep`."""
        keep = self.cfg.max_ckpt_to_keep
        if keep is None:
            return []
        doomed = [p for _, p in complete_checkpoints(self.root)[:-keep]]
        for path in doomed:
            shutil.rmtree(path)
        return doomed

    def clean_tmp(self) -> None:
        """Remove leftovers of interrupted saves (never a complete checkpoint)."""
        if self.root.is_dir():
            for path in self.root.glob(f"{TMP_PREFIX}*"):
                shutil.rmtree(path, ignore_errors=True)

    # ---- resume -------------------------------------------------------------------------
    def resolve_resume_dir(self) -> Optional[Path]:
        mode = self.cfg.resume
        if mode == "disable":
            return None
        if mode == "auto":
            return self.newest_verified()
        path = Path(mode)
        if not (path / COMPLETE_MARKER).exists() or checkpoint_step(path) is None:
            raise ValueError(f"trainer.resume={mode!r} is not a complete checkpoint directory "
                             f"(expected .../{STEP_PREFIX}<N> containing {COMPLETE_MARKER})")
        try:
            verify_manifest(path)
        except CheckpointCorruptError as exc:
            raise CheckpointCorruptError(exc.checkpoint, exc.file, f"{exc.reason} (trainer.resume={mode})") from None
        return path

    def newest_verified(self) -> Optional[Path]:
        """The newest complete checkpoint that verifies against its manifest; each newer one that
        does not is skipped with a line naming it, the file and the reason."""
        for _, path in reversed(complete_checkpoints(self.root)):
            try:
                verify_manifest(path)
                return path
            except CheckpointCorruptError as exc:
                print(f"rlsys: resume=auto skips {path}: {exc.file}: {exc.reason}", flush=True)
        return None

    def resume(self) -> int:
        """Load the checkpoint `trainer.resume` picks and return its step (0 when starting fresh).
        Afterwards the rollout engines hold the restored actor weights."""
        assert self.trainer is not None, "CheckpointManager.attach(trainer) before resume"
        self.clean_tmp()
        path = self.resolve_resume_dir()
        if path is None:
            return 0
        self.roles.actor.load_checkpoint(str(path / "actor"))
        if self.roles.critic is not None:
            if not (path / "critic").is_dir():
                raise ValueError(f"trainer.resume: {path} has no critic/ but this run trains a critic")
            self.roles.critic.load_checkpoint(str(path / "critic"))
        state = json.loads((path / "trainer_state.json").read_text())
        self.train_loader.load_state_dict(state["dataloader"])
        self.trainer.kl_ctrl.value = state["kl_coef"]
        self.trainer.val_history = [tuple(item) for item in state["val_history"]]
        rng = torch.load(path / "rng_state.pt", weights_only=False)  # our own file: numpy state needs pickle
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.weight_sync.sync()
        print(f"resumed from {path} (step {state['step']})", flush=True)
        return int(state["step"])
