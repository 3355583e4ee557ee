#!/usr/bin/env bash
# The pipeline on a CUDA GPU host (no dvc, MLflow or wordnet-base there): how benchmarks/results/gpu/ is made.
# Same stage code as the CPU run; params are changed with scripts/set_params.py (as `dvc exp run -S` would).
#
#   bash scripts/gpu_pipeline.sh OUT_DIR [all|tiny|bert-base|compare]      (default: all, in that order)
#
# Needs in the tree: data/prepared and artifacts/tokenizer from a local `python -m model_builds.prepare` with
# `data.max_train` empty (the whole train split), and the wheels of constraints/gpu-carry.txt in .whl/
# (scripts/gpu_wheels.sh), unless GPU_SITE_READY=1 says they are already in /tmp/site.
# params.yaml is EDITED IN PLACE and left as the run used it: run this on a disposable copy of the repository
# (scripts/gpu_session.sh makes one per part, outside the synced tree, and runs tiny and bert-base side by side).
#   tiny       the tiny teacher (fp32 only) on the whole train split: train + evaluate      -> OUT/tiny.tgz
#   bert-base  MLM pre-training, fine-tune, the GPU variants, evaluate, benchmark, profile, manifest
#                                                                                           -> OUT/bert-base.tgz
#   compare    paired comparison of the two teachers and the TF-IDF baseline     -> OUT/teacher_comparison.json
set -uo pipefail
out=${1:?usage: gpu_pipeline.sh OUT_DIR [all|tiny|bert-base|compare]}
part=${2:-all}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 INFOPT_TRACKING=off HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${GPU_SITE_READY:-0}" = 1 ]; then
  export PYTHONPATH=/tmp/site:$PWD
elif compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
[ -e "$out/env.txt" ] || {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability(), "transformers", transformers.__version__)'
} 2>&1 | tee "$out/env.txt"
original=$(mktemp)
cp params.yaml "$original"
# GPU_PIPELINE_DEVICE=cpu and GPU_PIPELINE_EXTRA="key=value ..." rehearse the script on a CPU host; EXTRA also
# narrows a GPU run (e.g. the ladder-only session disables the variants the ladder does not read), and
# GPU_PIPELINE_BASE_UNTIL (default manifest) ends bert-base's stages earlier (variants: all the ladder reads).
read -r -a extra <<< "${GPU_PIPELINE_EXTRA:-}"
common=(device="${GPU_PIPELINE_DEVICE:-cuda}" data.max_train=null 'benchmark.engines=[torch]' 'benchmark.threads=[1]'
        'benchmark.batch_sizes=[1,2,4,8,16,32,64,128,256]' train.batch_size=128)
status=0

pack() {  # name: what a run wrote, also after a failure
  tar czf "$out/$1.tgz" --ignore-failed-read params.yaml metrics/*.json plots/*.json plots/*.png \
    artifacts/predictions.npz \
    $(ls -d metrics/profiles metrics/summary artifacts/manifest.json artifacts/variants/*/variant.json 2>/dev/null)
}

fresh() {  # params.yaml as committed plus the given settings; no outputs of an earlier run
  cp "$original" params.yaml
  python3 scripts/set_params.py "${common[@]}" "$@" "${extra[@]}"
  rm -rf artifacts/models artifacts/variants artifacts/predictions.npz metrics/profiles metrics/summary metrics/*.json
}

if [ "$part" = all ] || [ "$part" = tiny ]; then
  fresh model.preset=tiny train.epochs=4 \
    variants.fp16.enabled=false variants.int8-dynamic.enabled=false variants.int8-static.enabled=false \
    variants.pruned-l1-40.enabled=false variants.pruned-heads-25.enabled=false variants.pruned-2of4.enabled=false \
    variants.distilled.enabled=false variants.fp8.enabled=false
  timeout "${GPU_PIPELINE_TINY_TIMEOUT:-420}" python3 scripts/run_stages.py --skip prepare --until evaluate \
    --timings metrics/stage_seconds.json
  rc=$?; echo "tiny: exit $rc"; status=$(( status || rc ))
  pack tiny
fi

if [ "$part" = all ] || [ "$part" = bert-base ]; then
  # pruned-l1-40 is an unstructured mask, served dense: nothing for a GPU to measure (its CPU numbers are in
  # the default run), and its fine-tune costs minutes of a short GPU lease. int8 ONNX needs onnxruntime in
  # benchmark.engines: the CPU run measures it.
  fresh model.preset=bert-base pretrain.enabled=true train.epochs=3 train.lr=0.0001 \
    variants.pruned-l1-40.enabled=false variants.distilled.epochs=2
  timeout "${GPU_PIPELINE_BASE_TIMEOUT:-1000}" python3 scripts/run_stages.py --skip prepare --until "${GPU_PIPELINE_BASE_UNTIL:-manifest}" \
    --timings metrics/stage_seconds.json
  rc=$?; echo "bert-base: exit $rc"; status=$(( status || rc ))
  pack bert-base
fi

if [ "$part" = all ] || [ "$part" = compare ]; then
  rm -rf /tmp/run-base /tmp/run-tiny && mkdir -p /tmp/run-base /tmp/run-tiny
  tar xzf "$out/bert-base.tgz" -C /tmp/run-base && tar xzf "$out/tiny.tgz" -C /tmp/run-tiny &&
    python3 -m benchmarks.teacher_comparison --run bert-base=/tmp/run-base --run tiny=/tmp/run-tiny \
      --out "$out/teacher_comparison.json"
  rc=$?; echo "compare: exit $rc"; status=$(( status || rc ))
fi
rm -f "$original"
exit "$status"
