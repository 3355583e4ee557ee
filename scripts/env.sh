# Sourced by the scripts: offline model hub, quiet DVC, the project's venv first on PATH.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
export MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
export PATH="$(pwd)/.venv/bin:$PATH"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"  # this checkout first, also for a git worktree sharing the venv
