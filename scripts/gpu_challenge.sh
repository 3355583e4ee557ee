#!/usr/bin/env bash
# The challenge ladder (`python -m challenge`, = `infopt challenge`) on a CUDA GPU host, after
# scripts/gpu_pipeline.sh has built the variants in the same copy of the repository (no dvc, no MLflow).
#
#   bash scripts/gpu_challenge.sh OUT_DIR [BUDGET_S]
#
# BUDGET_S: the ladder's wall-clock budget (default 330 s). With CHALLENGE_DEADLINE (epoch seconds) set,
# the budget is what is left before it minus 45 s (imports, the final write), so a command that started
# with the pipeline still ends in time: CHALLENGE_DEADLINE=$(( $(date +%s) + 530 )) at its start.
# Wheels in .whl/challenge/ (scripts/challenge_wheels.sh) are installed into /tmp/site for the modules the
# host cannot import (the gateway's web stack). Writes at most 4 files into OUT_DIR:
#   challenge/ladder.json  challenge/ladder.md  challenge-log.txt  challenge-env.txt
# A step that fails or runs out of budget is recorded in ladder.json (status partial); the exit status is
# the ladder's (0 complete or partial, 1 failed, 2 could not start, 3 interrupted, 124 timeout).
# CHALLENGE_DEVICE (default cuda) and CHALLENGE_ARGS (e.g. --reduced) exist for the CPU test of this script.
set -uo pipefail
out=${1:?usage: gpu_challenge.sh OUT_DIR [BUDGET_S]}
budget=${2:-330}
if [ -n "${CHALLENGE_DEADLINE:-}" ]; then
  budget=$(( CHALLENGE_DEADLINE - $(date +%s) - 45 ))
fi
mkdir -p "$out/challenge"
export PYTHONUNBUFFERED=1 INFOPT_TRACKING=off HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=/tmp/site:$PWD
missing=()
if compgen -G ".whl/challenge/*.whl" >/dev/null; then
  for wheel in .whl/challenge/*.whl; do
    module=$(basename "$wheel" | cut -d- -f1)
    python3 -c "import $module" 2>/dev/null || missing+=("$wheel")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${missing[@]}"
  fi
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
  echo "cores $(nproc); budget ${budget} s; installed from .whl/challenge: ${missing[*]:-none}"
  python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "numpy", "onnxruntime", "starlette", "uvicorn", "uvloop", "httptools",
             "prometheus_client", "pydantic", "scipy", "psutil"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # report every missing module, not only the first
        print(name, "MISSING:", error)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "capability", torch.cuda.get_device_capability() if torch.cuda.is_available() else None)
PY
} > "$out/challenge-env.txt" 2>&1
cat "$out/challenge-env.txt"
if [ "$budget" -lt 60 ]; then
  echo "gpu_challenge: only ${budget} s of budget left; not starting" | tee "$out/challenge-log.txt"
  exit 2
fi
timeout --signal=TERM --kill-after=30 $(( budget + 90 )) \
  python3 -m challenge --device "${CHALLENGE_DEVICE:-cuda}" --out "$out/challenge" --budget-s "$budget" \
  ${CHALLENGE_ARGS:-} 2>&1 | tee "$out/challenge-log.txt"
status=${PIPESTATUS[0]}
ls -la "$out" "$out/challenge"
echo "gpu_challenge: exit $status"
exit "$status"
