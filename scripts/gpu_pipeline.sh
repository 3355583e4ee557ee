#!/usr/bin/env bash
# The dvc.yaml stages train .. manifest on a CUDA GPU host (params `device: cuda`), with no dvc, MLflow or
# `fortunes` there: how benchmarks/results/gpu/ was produced. Same stage code as the CPU run.
#
#   bash scripts/gpu_pipeline.sh PRESET [EPOCHS] [OUT_DIR]
#
# PRESET: a model.presets key (tiny, small, bert-base); EPOCHS overrides train.epochs (blank: keep).
# Needs prepare's outputs (data/prepared, artifacts/tokenizer) in the tree; wheels of Python packages the
# host lacks may sit in .whl/ (installed into /tmp/site). params.yaml is EDITED IN PLACE (device, preset,
# epochs): run this on a disposable copy of the repository. Writes OUT_DIR/results-PRESET.tgz (metrics,
# plots, manifest, variant.json files, stage timings) and OUT_DIR/env-PRESET.txt.
set -euo pipefail
preset=${1:?preset}
epochs=${2:-}
out=${3:-/tmp/infopt-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 INFOPT_TRACKING=off
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability()); print("onnxruntime", o.__version__, o.get_available_providers())'
  python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|onnx|onnxruntime|optimum|numpy|tokenizers) ' || true
} 2>&1 | tee "$out/env-$preset.txt"

python3 - "$preset" "$epochs" <<'PY'
import re, sys
from pathlib import Path
preset, epochs = sys.argv[1], sys.argv[2]
text = Path("params.yaml").read_text()
edits = [(r"^device: \S+", "device: cuda"), (r"^  preset: \S+", f"  preset: {preset}")]
if epochs:  # train.epochs: 2-space indent (the distilled student's `epochs` has 4)
    edits.append((r"^  epochs: \d+", f"  epochs: {int(epochs)}"))
for pattern, line in edits:  # line edits: the file keeps its comments and layout
    text, count = re.subn(pattern, line, text, count=1, flags=re.M)
    assert count == 1, pattern
Path("params.yaml").write_text(text)
from infopt.params import load_params
params = load_params("params.yaml")
assert params.device == "cuda" and params.model.preset == preset
assert not epochs or params.train.epochs == int(epochs)
print(f"params.yaml: device={params.device} preset={params.model.preset} epochs={params.train.epochs} "
      f"variants={[v.name for v in params.variants if v.enabled]}")
PY

rm -rf artifacts/models artifacts/variants artifacts/manifest.json metrics/profiles metrics/stage_seconds.json
status=0
python3 scripts/run_stages.py --skip prepare --timings metrics/stage_seconds.json || status=$?
if [ "$status" = 0 ]; then
  python3 -c 'from rich.console import Console; from infopt.manifest import load_manifest; from model_builds.summary import render_table; Console(width=160).print(render_table(load_manifest("artifacts/manifest.json")))'
fi
# Whatever the stages wrote, also when one failed (stage_seconds.json says how far they got).
tar czf "$out/results-$preset.tgz" --ignore-failed-read params.yaml metrics/*.json plots/*.json plots/*.png \
  $(ls -d metrics/profiles artifacts/manifest.json artifacts/variants/*/variant.json 2>/dev/null)
echo "wrote $out/results-$preset.tgz (stages exit $status)"
exit "$status"
