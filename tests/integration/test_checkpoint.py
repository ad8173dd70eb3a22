"""Checkpoint and resume, end to end: `python -m rlsys.main` runs on CPU killed, crashed and resumed.

Each run is its own process group (`start_new_session=True`), so a SIGKILL reaches Ray and vLLM
too and the test can check nothing of the run survives. Two test-only env vars are read by the
run: `RLSYS_TEST_STEP_SLEEP_S` (sleep inside every step, after its batch is drawn) widens each
step so the kill lands inside step 5; `RLSYS_TEST_CRASH_DURING_SAVE=<N>` exits mid-save at step N.

One run serves two tests (`crashed_at_save_6`, module-scoped): it crashes in the save of its
last step, 6, after that step was trained, validated and logged, so up to the save it is the
uninterrupted run the killed-and-resumed run is compared with, and its checkpoints (2 and 4
complete, 6 partial) are what the crash test resumes from (in a copy).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rlsys.trainer.generations import read_val_generations
from rlsys.trainer.manifest import verify_manifest
from tests.integration.test_recipes import read_metrics, run_main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GRPO = ("+recipe=grpo", "trainer.save_freq=2")
SIX_STEPS = (*GRPO, "trainer.total_steps=6", "trainer.test_freq=6")


def start_run(run_dir: Path, *overrides: str, env_extra: dict) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rlsys.main", f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **env_extra)
    log = open(run_dir / "driver.log", "w")
    # SIGINT back to its default in the run: a shell starts background jobs with it ignored, which
    # the run would inherit (Python then installs no KeyboardInterrupt handler), and the
    # interrupt tests send it.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def session_processes(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of session `sid`: the run and everything it started."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return alive


def kill_session(proc: subprocess.Popen, timeout_s: float = 30.0) -> list[str]:
    """SIGKILL the run's process group; returns what is still alive after `timeout_s` (should be nothing)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout_s)
    deadline = time.time() + timeout_s
    while session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    return [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in session_processes(proc.pid)]


def batch_uids(run_dir: Path) -> dict[int, list]:
    """Step -> prompt uids, the last line per step winning (a killed step is logged again on resume)."""
    rows = [json.loads(line) for line in (run_dir / "batch_uids.jsonl").read_text().splitlines()]
    return {row["step"]: row["uids"] for row in rows}


def val_responses(run_dir: Path) -> list[list[int]]:
    return [row["response_ids"] for row in read_val_generations(run_dir / "val_generations.jsonl")]  # last step's


def wait_for(predicate, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            kill_session(proc)
            raise AssertionError(f"run ended (rc={proc.returncode}) or timed out before the condition held")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def crashed_at_save_6(tmp_path_factory) -> tuple[int, Path]:
    """(exit code, run dir) of a six-step run that exits in the middle of its step-6 save."""
    run_dir = tmp_path_factory.mktemp("crashed_at_save_6") / "run"
    proc = start_run(run_dir, *SIX_STEPS, env_extra={"RLSYS_TEST_CRASH_DURING_SAVE": "6"})
    try:
        proc.wait(timeout=600)
    finally:
        kill_session(proc)  # os._exit skipped Ray's shutdown: clean up its processes
    return proc.returncode, run_dir


def test_sigkill_during_step_5_then_resume_matches_an_uninterrupted_run(tmp_path, crashed_at_save_6):
    rc, straight = crashed_at_save_6  # trained, validated and logged all six steps before its last save
    assert rc == 17, (straight / "driver.log").read_text()[-3000:]
    assert [r["step"] for r in read_metrics(straight) if r["step"] > 0] == [1, 2, 3, 4, 5, 6]

    run_dir = tmp_path / "killed"
    proc = start_run(run_dir, *SIX_STEPS, env_extra={"RLSYS_TEST_STEP_SLEEP_S": "2"})
    wait_for(lambda: (run_dir / "checkpoints/global_step_4/COMPLETE").exists()
             and 5 in batch_uids(run_dir), proc)
    leaked = kill_session(proc)
    assert leaked == [], f"processes of the killed run still alive: {leaked}"
    assert [r["step"] for r in read_metrics(run_dir) if r["step"] > 0] == [1, 2, 3, 4]  # died inside step 5
    assert not (run_dir / "checkpoints/global_step_6").exists()

    proc = run_main(run_dir, *SIX_STEPS)
    assert proc.returncode == 0
    assert f"resumed from {run_dir / 'checkpoints' / 'global_step_4'} (step 4)" in proc.stdout
    assert batch_uids(run_dir) == batch_uids(straight)  # same prompts, steps 1-6
    resumed = [r for r in read_metrics(run_dir) if r["step"] > 4]
    assert [r["step"] for r in resumed] == [5, 6]
    # Weights, optimizer moments and scheduler were restored: the resumed steps train exactly like
    # the straight run's and the final greedy validation outputs agree token for token.
    reference = {r["step"]: r for r in read_metrics(straight)}
    for row in resumed:
        for key in ("actor/pg_loss", "actor/grad_norm", "critic/score/mean"):
            assert row[key] == pytest.approx(reference[row["step"]][key], rel=1e-4, abs=1e-6), (row["step"], key)
    assert val_responses(run_dir) == val_responses(straight)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [step for step, _ in summary["val_history"]] == [0, 6]  # history restored, no re-validation at start


def test_crash_during_save_keeps_previous_checkpoint_and_resume_skips_partial_one(tmp_path, crashed_at_save_6):
    rc, crashed = crashed_at_save_6
    assert rc == 17, (crashed / "driver.log").read_text()[-3000:]
    run_dir = tmp_path / "run"
    shutil.copytree(crashed, run_dir)  # the fixture's run stays as it was for the other test
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "global_step_4" / "COMPLETE").exists()
    assert (ckpts / ".tmp_global_step_6" / "actor").is_dir()  # the save was under way
    assert not (ckpts / ".tmp_global_step_6" / "COMPLETE").exists() and not (ckpts / "global_step_6").exists()
    crashed_uids = batch_uids(run_dir)

    # Issue 15.3: a corrupted newest checkpoint (truncated DCP shard; the other three measured
    # corruptions are unit-tested in tests/unit/trainer/test_manifest.py). resume=auto skips the
    # partial save and the corrupted one, with a line saying why, and resumes from the one before;
    # an explicit path fails naming the file.
    shard = ckpts / "global_step_4" / "actor" / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    proc = run_main(run_dir, *GRPO, "trainer.total_steps=6", "trainer.test_freq=0")
    assert proc.returncode == 0
    assert f"rlsys: resume=auto skips {ckpts / 'global_step_4'}: actor/dcp/__0_0.distcp: size 1000 bytes" in proc.stdout
    assert f"resumed from {ckpts / 'global_step_2'} (step 2)" in proc.stdout
    assert sorted(p.name for p in ckpts.iterdir()) == [f"global_step_{n}" for n in (2, 4, 6)]  # .tmp_* removed
    assert batch_uids(run_dir) == {step: crashed_uids[step] for step in range(1, 7)}
    assert [r["step"] for r in read_metrics(run_dir) if r["step"] > 2][-4:] == [3, 4, 5, 6]
    verify_manifest(ckpts / "global_step_4")  # saved again, whole
    verify_manifest(ckpts / "global_step_6")

    shard = ckpts / "global_step_6" / "actor" / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    proc = run_main(run_dir, *GRPO, "trainer.total_steps=6", f"trainer.resume={ckpts / 'global_step_6'}")
    assert proc.returncode != 0
    assert "actor/dcp/__0_0.distcp" in proc.stderr and f"trainer.resume={ckpts / 'global_step_6'}" in proc.stderr


VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    model_dir, prompts, max_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=model_dir, dtype="float32", max_model_len=64, enforce_eager=True, seed=0)
    outs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    print("VLLM_IDS=" + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
"""


def test_hf_actor_dir_loads_in_transformers_and_vllm_and_keeps_only_newest(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlsys.models.warmup import ensure_base_model
    from rlsys.tasks import make_arithmetic_dataset

    run_dir = tmp_path / "run"
    proc = run_main(run_dir, "+recipe=grpo", "trainer.total_steps=2", "trainer.test_freq=2",
                    "trainer.save_freq=1", "trainer.max_ckpt_to_keep=1", "actor.optim.lr=1e-3")
    assert proc.returncode == 0
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["global_step_2"]
    hf_dir = run_dir / "checkpoints" / "global_step_2" / "actor" / "hf"

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(ensure_base_model(seed=0), dtype=torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), base.parameters()))  # trained weights
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    val_rows = make_arithmetic_dataset(128, seed=0, split="val")  # the run's val set (data.val_size=128)
    generations = read_val_generations(run_dir / "val_generations.jsonl", step=2)[:8]
    prompts = [tokenizer(val_rows[int(g["uid"][1:])]["prompt"], add_special_tokens=False)["input_ids"]
               for g in generations]
    hf_ids = []
    for ids in prompts:
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=8,
                             pad_token_id=tokenizer.pad_token_id)
        hf_ids.append(out[0, len(ids):].tolist())
    assert hf_ids == [g["response_ids"] for g in generations]  # the run's greedy validation at step 2

    script = tmp_path / "vllm_generate.py"
    script.write_text(VLLM_SCRIPT)
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false")
    gen = subprocess.run([sys.executable, str(script), str(hf_dir), json.dumps(prompts), "8"], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-4000:]
    line = next(l for l in gen.stdout.splitlines() if l.startswith("VLLM_IDS="))
    assert json.loads(line[len("VLLM_IDS="):]) == hf_ids
