"""Issue 15.3 (unit, no Ray): checkpoint manifests catch the four measured corruptions, and
`resume` picks the newest checkpoint that verifies (auto) or fails naming the file (explicit path).

The checkpoints here are small directories laid out like a real save (DCP shard + `.metadata`,
`extra_state.pt`, `trainer_state.json`, `COMPLETE`), written by `write_manifest` as a save does.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlsys.trainer.checkpoint import COMPLETE_MARKER, CheckpointManager
from rlsys.trainer.manifest import MANIFEST_NAME, CheckpointCorruptError, verify_manifest, write_manifest


def fake_checkpoint(root: Path, step: int) -> Path:
    path = root / f"global_step_{step}"
    (path / "actor" / "dcp").mkdir(parents=True)
    (path / "actor" / "dcp" / "__0_0.distcp").write_bytes(bytes(range(256)) * 64)
    (path / "actor" / "dcp" / ".metadata").write_bytes(b"dcp metadata")
    (path / "actor" / "extra_state.pt").write_bytes(b"scheduler state")
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    (path / COMPLETE_MARKER).write_text(f"{step}\n")
    write_manifest(path)
    return path


def truncate_shard(path: Path) -> str:
    shard = path / "actor" / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    return "actor/dcp/__0_0.distcp"


def delete_metadata(path: Path) -> str:
    (path / "actor" / "dcp" / ".metadata").unlink()
    return "actor/dcp/.metadata"


def delete_extra_state(path: Path) -> str:
    (path / "actor" / "extra_state.pt").unlink()
    return "actor/extra_state.pt"


def empty_trainer_state(path: Path) -> str:
    (path / "trainer_state.json").write_text("")
    return "trainer_state.json"


CORRUPTIONS = [truncate_shard, delete_metadata, delete_extra_state, empty_trainer_state]


def manager(root: Path, resume: str) -> CheckpointManager:
    cfg = SimpleNamespace(max_ckpt_to_keep=None, resume=resume, save_freq=1, total_steps=4)
    return CheckpointManager(cfg, root, roles=None, train_loader=None, weight_sync=None)


def test_manifest_lists_every_file_with_size_and_checksum(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["algorithm"] == "sha256"
    assert sorted(manifest["files"]) == [COMPLETE_MARKER, "actor/dcp/.metadata", "actor/dcp/__0_0.distcp",
                                         "actor/extra_state.pt", "trainer_state.json"]
    assert manifest["files"]["actor/dcp/__0_0.distcp"]["size_bytes"] == 256 * 64
    assert verify_manifest(path) == sum(e["size_bytes"] for e in manifest["files"].values())


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_each_measured_corruption_fails_verification_naming_the_file(tmp_path, corrupt):
    path = fake_checkpoint(tmp_path, 2)
    bad_file = corrupt(path)
    with pytest.raises(CheckpointCorruptError) as info:
        verify_manifest(path)
    assert info.value.file == bad_file
    assert str(path) in str(info.value) and bad_file in str(info.value)


def test_same_size_bit_flip_is_caught_by_the_checksum(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    shard = path / "actor" / "dcp" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    verify_manifest(path, checksums=False)  # sizes alone do not see it
    with pytest.raises(CheckpointCorruptError, match="sha256"):
        verify_manifest(path)


def test_missing_manifest_does_not_verify(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    (path / MANIFEST_NAME).unlink()
    with pytest.raises(CheckpointCorruptError, match=MANIFEST_NAME):
        verify_manifest(path)


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_resume_auto_falls_back_to_newest_that_verifies_and_says_why(tmp_path, capsys, corrupt):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4)
    newest = fake_checkpoint(tmp_path, 6)
    bad_file = corrupt(newest)
    assert manager(tmp_path, "auto").resolve_resume_dir() == tmp_path / "global_step_4"
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"rlsys: resume=auto skips {newest}: {bad_file}: ")


def test_resume_auto_with_no_checkpoint_that_verifies_starts_fresh(tmp_path, capsys):
    truncate_shard(fake_checkpoint(tmp_path, 2))
    assert manager(tmp_path, "auto").resolve_resume_dir() is None
    assert "skips" in capsys.readouterr().out


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_explicit_resume_path_that_does_not_verify_fails_naming_the_file(tmp_path, corrupt):
    path = fake_checkpoint(tmp_path, 2)
    bad_file = corrupt(path)
    with pytest.raises(CheckpointCorruptError) as info:
        manager(tmp_path, str(path)).resolve_resume_dir()
    assert info.value.file == bad_file and f"trainer.resume={path}" in str(info.value)


def test_explicit_resume_of_an_unfinished_save_is_refused(tmp_path):
    path = fake_checkpoint(tmp_path, 2)
    unfinished = path.rename(tmp_path / ".tmp_global_step_2")
    with pytest.raises(ValueError, match="not a complete checkpoint directory"):
        manager(tmp_path, str(unfinished)).resolve_resume_dir()
