"""The shrunk pipeline workspace shared by the end-to-end test and the README examples test.

A fresh git copy of the repository's tracked files, params shrunk to a few hundred WordNet glosses and a
tiny LLM, then a real `dvc repro` with a real MLflow sqlite store. Built once per session (tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]


def _copy_tracked(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _shrink_params(path: Path) -> None:
    yaml = YAML()
    raw = yaml.load(path.read_text())
    raw["device"] = "cpu"
    raw["data"].update(
        {
            "categories": ["noun.food", "verb.motion", "adj.pert"],
            "max_per_class": 80,
            "val_fraction": 0.1,
            "max_train": 150,
        }
    )
    raw["model"]["max_seq_len"] = 32
    raw["model"]["vocab_size"] = 1000
    raw["train"].update({"epochs": 1, "require_beats_majority": False})  # 1 epoch on 150 texts: no gate
    raw["variants"] = [
        {"name": "fp32", "kind": "baseline"},
        {"name": "int8-dynamic", "kind": "int8_onnx", "calibration": "dynamic", "per_channel": True},
        {
            "name": "distilled",
            "kind": "distilled",
            "epochs": 1,
            "student": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        },
    ]
    raw["benchmark"].update(
        {
            "batch_sizes": [1, 4],
            "threads": [1],
            "repeats": 2,
            "min_iters": 5,
            "min_seconds": 0.05,
            "max_seconds": 1.0,
            "warmup_iters": 1,
        }
    )
    raw["evaluate"]["bootstrap_resamples"] = 200
    raw["profile"].update({"batch_size": 4, "iters": 2, "top_k": 5})
    llm = raw["llm"]
    llm.update({"vocab_size": 400, "max_seq_len": 32})
    llm["presets"]["tiny"] = {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }  # fmt: skip
    llm["data"]["max_documents"] = 300
    llm["train"].update({"steps": 10, "warmup_steps": 2})
    llm["variants"][-1].update({"steps": 5})
    llm["variants"][-1]["student"].update({"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 1})
    llm["evaluate"].update({"max_documents": 40, "bootstrap_resamples": 200})
    llm["benchmark"].update({"batch_sizes": [1], "prompt_tokens": 8, "output_tokens": 4, "min_iters": 2})
    with path.open("w") as handle:
        yaml.dump(raw, handle)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def build_pipeline_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    """A git copy of the repository with shrunk params where `dvc repro` ran: (root, env, repro seconds)."""
    root = tmp_path_factory.mktemp("e2e")
    _copy_tracked(root)
    _shrink_params(root / "params.yaml")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
    }
    env.pop("INFOPT_GIT_SHA", None)
    run(["git", "init", "-q"], root, env, 30)
    run(["git", "add", "-A"], root, env, 30)
    run(["git", "commit", "-q", "-m", "e2e copy"], root, env, 30)
    begin = time.monotonic()
    run(["dvc", "repro"], root, env, 900)  # a bound against hangs; the shrunk run takes a few minutes
    return root, env, time.monotonic() - begin
