#!/usr/bin/env bash
# The pipeline on a CUDA GPU host (no dvc, MLflow or wordnet-base there): how benchmarks/results/gpu/ is made.
# Same stage code as the CPU run; params are changed with scripts/set_params.py (as `dvc exp run -S` would).
#
#   bash scripts/gpu_pipeline.sh OUT_DIR
#
# Needs in the tree: data/prepared and artifacts/tokenizer from a local `python -m model_builds.prepare` with
# `data.max_train` empty (the whole train split), and the wheels of constraints/gpu-carry.txt in .whl/
# (scripts/gpu_wheels.sh). params.yaml is EDITED IN PLACE: run this on a disposable copy of the repository.
#   1. tiny teacher (fp32 only) on the whole train split: train + evaluate          -> OUT/tiny.tgz
#   2. bert-base: MLM pre-training, fine-tune, every GPU variant, evaluate, benchmark, profile, manifest
#                                                                                    -> OUT/bert-base.tgz
#   3. paired comparison of the two teachers and the TF-IDF baseline                 -> OUT/teacher_comparison.json
set -uo pipefail
out=${1:?OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 INFOPT_TRACKING=off HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability(), "transformers", transformers.__version__)'
} 2>&1 | tee "$out/env.txt"
cp params.yaml /tmp/params.original.yaml
# GPU_PIPELINE_DEVICE=cpu and GPU_PIPELINE_EXTRA="key=value ..." rehearse the script on a CPU host.
read -r -a extra <<< "${GPU_PIPELINE_EXTRA:-}"
common=(device="${GPU_PIPELINE_DEVICE:-cuda}" data.max_train=null 'benchmark.engines=[torch]' 'benchmark.threads=[1]'
        'benchmark.batch_sizes=[1,2,4,8,16,32,64,128,256]' train.batch_size=128)

pack() {  # name: what a run wrote, also after a failure
  tar czf "$out/$1.tgz" --ignore-failed-read params.yaml metrics/*.json metrics/stage_seconds.json \
    plots/*.json plots/*.png artifacts/predictions.npz \
    $(ls -d metrics/profiles metrics/summary artifacts/manifest.json artifacts/variants/*/variant.json 2>/dev/null)
}

# 1. tiny, fp32 only
cp /tmp/params.original.yaml params.yaml
python3 scripts/set_params.py "${common[@]}" model.preset=tiny train.epochs=4 "${extra[@]}" \
  variants.fp16.enabled=false variants.int8-dynamic.enabled=false variants.int8-static.enabled=false \
  variants.pruned-l1-40.enabled=false variants.pruned-heads-25.enabled=false variants.pruned-2of4.enabled=false \
  variants.distilled.enabled=false variants.fp8.enabled=false
rm -rf artifacts/models artifacts/variants artifacts/predictions.npz metrics/profiles metrics/summary metrics/*.json
timeout "${GPU_PIPELINE_TINY_TIMEOUT:-150}" python3 scripts/run_stages.py --skip prepare --until evaluate --timings metrics/stage_seconds.json
tiny=$?
pack tiny
mkdir -p /tmp/run-tiny && tar xzf "$out/tiny.tgz" -C /tmp/run-tiny

# 2. bert-base, every GPU variant
cp /tmp/params.original.yaml params.yaml
python3 scripts/set_params.py "${common[@]}" model.preset=bert-base pretrain.enabled=true train.epochs=3 \
  train.lr=0.0001 variants.distilled.epochs=3 "${extra[@]}"
rm -rf artifacts/models artifacts/variants artifacts/predictions.npz metrics/profiles metrics/summary metrics/*.json
timeout "${GPU_PIPELINE_BASE_TIMEOUT:-480}" python3 scripts/run_stages.py --skip prepare --timings metrics/stage_seconds.json
base=$?
pack bert-base
mkdir -p /tmp/run-base && tar xzf "$out/bert-base.tgz" -C /tmp/run-base

# 3. the teachers and the baseline, paired on the same test split
python3 -m benchmarks.teacher_comparison --run bert-base=/tmp/run-base --run tiny=/tmp/run-tiny \
  --out "$out/teacher_comparison.json" || true
cp /tmp/params.original.yaml params.yaml
echo "tiny exit $tiny, bert-base exit $base"
exit $(( tiny != 0 || base != 0 ))
