#!/usr/bin/env bash
# One lent-GPU session (the device tool): the pipeline's two teachers, their comparison, then the challenge
# ladder, as a background chain that outlives one device call, in copies OUTSIDE the synced tree (each call
# re-syncs the tree: params.yaml and untracked outputs there would be replaced mid-run).
#
#   bash scripts/gpu_session.sh start  RUN_DIR DEADLINE_S     # returns at once; the chain runs on (setsid)
#   bash scripts/gpu_session.sh watch  RUN_DIR MAX_S OUT_DIR  # waits until the chain is done or MAX_S pass,
#                                                             # then copies what it wrote so far into OUT_DIR
# DEADLINE_S: seconds from start by which everything must have ended (the device budget left, less a margin):
# the challenge gets what is left of it (at most CHALLENGE_MAX_S, default 480 s).
# Chain: bert-base (scripts/gpu_pipeline.sh bert-base) starts at once; the tiny teacher starts when bert-base's
# time-bounded MLM pre-training has ended (so it does not take GPU time from it) and ends long before
# bert-base's benchmark stage; then the paired teacher comparison; then scripts/gpu_challenge.sh on the
# bert-base variants. RUN_DIR/out holds logs and results; RUN_DIR/out/DONE marks the end.
# GPU_SESSION_PARTS (default "tiny compare"): the optional parts; empty for a ladder-only session (bert-base
# and the ladder; pair it with GPU_PIPELINE_BASE_UNTIL=variants). GPU_SESSION_PROBE=1 first runs
# benchmarks/gpu_hf_precision_probe.py (HF eager per precision at batch 1, about a minute) into out/.
# The device's copy has no .git: set INFOPT_GIT_SHA=<the commit sent> in the device command, or every
# fingerprint of the run says git_sha "unknown".
# Needs in the tree: .gpu/data/prepared and .gpu/artifacts/tokenizer (the whole split, prepared here), .whl/
# (scripts/gpu_wheels.sh, scripts/challenge_wheels.sh) and .whl/extra (scikit-learn, joblib, threadpoolctl).
set -uo pipefail
mode=${1:?usage: gpu_session.sh start|watch RUN_DIR ...}
run=${2:?RUN_DIR}
out="$run/out"

start() {
  local deadline=$(( $(date +%s) + ${1:?DEADLINE_S} ))
  mkdir -p "$out"
  for part in base tiny; do
    rm -rf "${run:?}/$part" && mkdir -p "$run/$part"
    tar cf - --exclude=./.git --exclude=./.venv --exclude=./.venv-vllm . | tar xf - -C "$run/$part"
    mkdir -p "$run/$part/data" "$run/$part/artifacts"
    rm -rf "$run/$part/data/prepared" "$run/$part/artifacts/tokenizer"
    cp -a .gpu/data/prepared "$run/$part/data/prepared"
    cp -a .gpu/artifacts/tokenizer "$run/$part/artifacts/tokenizer"
    rm -rf "$run/$part/metrics"  # the committed CPU run's; also the tiny part's start signal below
  done
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl > "$out/pip.txt" 2>&1
  # evaluate's TF-IDF baseline needs scikit-learn: carried in .whl/extra, installed only where the host lacks it
  if ! python3 -c 'import sklearn' 2>/dev/null && compgen -G ".whl/extra/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .whl/extra/*.whl >> "$out/pip.txt" 2>&1
  fi
  python3 -c 'import sklearn, scipy; print("sklearn", sklearn.__version__, "scipy", scipy.__version__)' \
    >> "$out/pip.txt" 2>&1
  export GPU_SITE_READY=1 CHALLENGE_SITE=/tmp/site
  [ -n "${INFOPT_GIT_SHA:-}" ] || echo "gpu_session: INFOPT_GIT_SHA is not set: fingerprints will say git_sha unknown" >&2
  local parts=" ${GPU_SESSION_PARTS-tiny compare} "
  [ "$parts" = "${parts/ tiny /}" ] && echo 0 > "$out/tiny.exit"  # not run: nothing to wait for
  setsid nohup bash -c "
    set -u
    if [ '${GPU_SESSION_PROBE:-0}' = 1 ]; then
      cd '$run/base' && PYTHONPATH=/tmp/site:'$run/base' timeout 240 python3 -m benchmarks.gpu_hf_precision_probe \
        --out '$out/hf_precision_probe.json' > '$out/log-probe.txt' 2>&1
    fi
    if [ ! -e '$out/tiny.exit' ]; then
      (
        cd '$run/tiny' || exit 1
        until [ -e '$run/base/metrics/pretrain.json' ] || [ -e '$out/base.exit' ]; do sleep 5; done
        bash scripts/gpu_pipeline.sh '$out' tiny > '$out/log-tiny.txt' 2>&1; echo \$? > '$out/tiny.exit'
      ) &
    fi
    cd '$run/base'
    bash scripts/gpu_pipeline.sh '$out' bert-base > '$out/log-bert-base.txt' 2>&1; echo \$? > '$out/base.exit'
    wait
    [ '$parts' = '${parts/ compare /}' ] || bash scripts/gpu_pipeline.sh '$out' compare > '$out/log-compare.txt' 2>&1
    left=\$(( $deadline - \$(date +%s) ))
    cap=${CHALLENGE_MAX_S:-480}
    [ \$left -gt \$(( cap + 45 )) ] && left=\$(( cap + 45 ))
    CHALLENGE_DEADLINE=\$(( \$(date +%s) + left )) bash scripts/gpu_challenge.sh '$out' > '$out/log-challenge.txt' 2>&1
    echo \$? > '$out/challenge.exit'
    touch '$out/DONE'
  " > "$out/chain.txt" 2>&1 < /dev/null &
  echo "started; deadline $(date -d @"$deadline" +%T)"
}

watch() {
  local max_s=${1:?MAX_S} dest=${2:?OUT_DIR} t0
  t0=$(date +%s)
  while [ ! -e "$out/DONE" ] && [ $(( $(date +%s) - t0 )) -lt "$max_s" ]; do sleep 10; done
  for log in "$out"/log-*.txt; do echo "== $log"; tail -n 12 "$log"; done
  ls "$out"
  mkdir -p "$dest" && cp -a "$out"/. "$dest"/
  [ -e "$out/DONE" ] && echo "chain: done" || echo "chain: still running"
}

case "$mode" in
  start) start "${3:-}" ;;
  watch) watch "${3:-}" "${4:-}" ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
