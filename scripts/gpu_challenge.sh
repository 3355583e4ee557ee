#!/usr/bin/env bash
# The challenge ladder (`python -m challenge`, = `infopt challenge`) on a CUDA GPU host, from the repository
# root, after scripts/gpu_pipeline.sh has built the variants in the same copy (no dvc, no MLflow, no typer).
#
#   bash scripts/gpu_challenge.sh OUT_DIR [BUDGET_S]
#
# BUDGET_S: the ladder's wall-clock budget (default 400 s). Every step has its own timeout: wheels 60 + 30 +
# 60 s, environment probe 20 + 60 s, the ladder BUDGET_S + 90 s (then SIGTERM, which the ladder turns into a
# partial ladder.json; SIGKILL 20 s later). So the script ends within BUDGET_S + 340 s at worst (~12 min at
# the default) and typically within BUDGET_S + ~60 s. With CHALLENGE_DEADLINE (epoch seconds) set, the budget
# is what is left before it minus 45 s instead.
# Wheels: .whl/*.whl (constraints/gpu-carry.txt, scripts/gpu_wheels.sh) go into CHALLENGE_SITE (default
# /tmp/site, where gpu_pipeline.sh put them) unless already there; .whl/challenge/*.whl
# (scripts/challenge_wheels.sh) only for modules the host cannot import.
# Writes into OUT_DIR as it goes (a cut or failed run still leaves its numbers):
#   challenge-env.txt (GPU, modules)  challenge-log.txt (progress)  challenge/ladder.json + ladder.md (rewritten
#   after every candidate and step; the JSON atomically)
# Exit status: the ladder's (0 complete or partial, 1 failed, 2 could not start, 3 interrupted, 124 timeout).
# CHALLENGE_DEVICE (default cuda) and CHALLENGE_ARGS (e.g. --reduced) exist for the CPU rehearsal of this
# script (tests/challenge/test_gpu_script.py).
set -uo pipefail
out=${1:?usage: gpu_challenge.sh OUT_DIR [BUDGET_S]}
budget=${2:-400}
if [ -n "${CHALLENGE_DEADLINE:-}" ]; then
  budget=$(( CHALLENGE_DEADLINE - $(date +%s) - 45 ))
fi
site=${CHALLENGE_SITE:-/tmp/site}
mkdir -p "$out/challenge"
log="$out/challenge-log.txt"
: > "$log"
export PYTHONUNBUFFERED=1 INFOPT_TRACKING=off HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$site:$PWD

# 1. wheels: the pipeline's carried set (if gpu_pipeline.sh did not install it here), then the challenge's extras
installed=()
carried=()
for wheel in .whl/*.whl; do
  [ -e "$wheel" ] || continue
  name=$(basename "$wheel" | cut -d- -f1-2)  # e.g. pydantic-2.14.4
  compgen -G "$site/${name}.dist-info" >/dev/null || carried+=("$wheel")
done
if [ ${#carried[@]} -gt 0 ]; then
  timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${carried[@]}" >>"$log" 2>&1 && installed+=("${carried[@]}")
fi
missing=()
if compgen -G ".whl/challenge/*.whl" >/dev/null; then  # one interpreter checks every module (import name = wheel's first field)
  mapfile -t missing < <(timeout 30 python3 - .whl/challenge/*.whl <<'PY'
import importlib.util, os, sys
for wheel in sys.argv[1:]:
    module = os.path.basename(wheel).split("-")[0]
    if importlib.util.find_spec(module) is None:
        print(wheel)
PY
)
fi
if [ ${#missing[@]} -gt 0 ]; then
  timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "${missing[@]}" >>"$log" 2>&1 && installed+=("${missing[@]}")
fi

# 2. what this run has: GPU, cores, budget, the modules the ladder and the gateway import
{
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1
  echo "cores $(nproc); budget ${budget} s; installed into ${site}: ${installed[*]:-none}"
  timeout 60 python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "tokenizers", "numpy", "onnxruntime", "pydantic", "ruamel.yaml", "starlette",
             "uvicorn", "uvloop", "httptools", "orjson", "prometheus_client", "httpx", "anyio", "psutil", "rich",
             "scipy"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), getattr(module, "__file__", ""))
    except Exception as error:  # report every missing module, not only the first
        print(name, "MISSING:", error)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "capability", torch.cuda.get_device_capability() if torch.cuda.is_available() else None)
PY
} > "$out/challenge-env.txt" 2>&1
cat "$out/challenge-env.txt"
if [ "$budget" -lt 60 ]; then
  echo "gpu_challenge: only ${budget} s of budget left; not starting" | tee -a "$log"
  exit 2
fi

# 3. the ladder (ladder.json is rewritten after every step)
timeout --signal=TERM --kill-after=20 $(( budget + 90 )) \
  python3 -m challenge --device "${CHALLENGE_DEVICE:-cuda}" --out "$out/challenge" --budget-s "$budget" \
  ${CHALLENGE_ARGS:-} 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
ls -la "$out" "$out/challenge"
echo "gpu_challenge: exit $status" | tee -a "$log"
exit "$status"
