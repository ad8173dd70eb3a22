#!/usr/bin/env bash
# GPU acceptance runs (issues 3 and 4), one stage per call so each fits a device command.
# Expects the GPU stack installed as ../shared/gpu/README.md shows (PYTHONPATH set) and
# writes logs and run directories under $OUT (default /tmp/rlsys_gpu_out).
#   bash scripts/gpu_acceptance.sh tests     # weight-sync tests on CUDA in bf16 + trainer colocate/sleep
#   bash scripts/gpu_acceptance.sh grpo05 colocate|split   # GRPO 5 steps, Qwen2.5-0.5B shape
#   bash scripts/gpu_acceptance.sh bench cuda_ipc|nccl|all # bench_weight_sync, 0.5B and 7B shapes
set -uo pipefail
OUT=${OUT:-/tmp/rlsys_gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case "$1" in
  tests)
    RLSYS_TEST_DTYPE=bfloat16 timeout 400 python3 -m pytest -q -s -p no:cacheprovider \
      tests/integration/test_vllm_weight_sync.py -k "${K:-not gloo_failed_peer}" > "$OUT/tests_bf16.log" 2>&1
    grep -E "^\[|passed|failed|^FAILED|^E " "$OUT/tests_bf16.log" | tail -40 ;;
  trainer_test)
    timeout 300 python3 -m pytest -q -s -p no:cacheprovider tests/integration/test_recipes.py \
      -k "gpu_with_sleep" > "$OUT/trainer_test.log" 2>&1
    grep -E "^\[|passed|failed|^FAILED|^E " "$OUT/trainer_test.log" | tail -20 ;;
  grpo05)
    [ -d /tmp/q05 ] || python3 scripts/make_tiny_model.py --random --shape qwen2.5-0.5b --dtype bfloat16 --out /tmp/q05 | tail -1
    extra=""
    [ "$2" = split ] && extra="trainer.n_devices_per_node=2"
    timeout ${RUN_TIMEOUT:-420} python3 -m rlsys.main +recipe=grpo model.path=/tmp/q05 placement="$2" $extra \
      trainer.total_steps=5 trainer.test_freq=5 weight_sync.verify=true \
      hydra.run.dir="$OUT/grpo05_$2" > "$OUT/grpo05_$2.log" 2>&1
    echo "exit $?"; grep -v "WorkerDict\|EngineCore\|Worker pid" "$OUT/grpo05_$2.log" | tail -12
    python3 - "$OUT/grpo05_$2/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()
           if k == "step" or k.startswith("timing_s/") or k in ("critic/score/mean", "actor/pg_loss", "perf/throughput")})
PY
    ;;
  bench)
    timeout 540 python3 scripts/bench_weight_sync.py --shape qwen2.5-0.5b,qwen2.5-7b --transport "$2" \
      --repeats 3 --out "$OUT/bench_$2.json" 2>&1 | grep -v "WARNING\|INFO" | tail -30 ;;
esac
