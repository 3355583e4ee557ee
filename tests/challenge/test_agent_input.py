from __future__ import annotations

import json
from pathlib import Path

from challenge.agent_input import read_agent
from challenge.ladder import premium_wait
from infopt.params import load_params

REPO = Path(__file__).resolve().parents[2]


def _outcomes(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "outcomes": [
                    {
                        "outcome": "recommendation",
                        "node": "batching",
                        "topic": "batching",
                        "title": "batching for textcls-premium",
                        "summary": "batch 16: 900 req/s, p99 31 ms",
                        "target": {"deployment": "textcls-premium"},
                        "changes": [
                            {"path": "deployments[textcls-premium].batching.max_batch_size", "old": 8, "new": 16},
                            {"path": "deployments[textcls-premium].batching.max_wait_ms", "old": 2, "new": 3.5},
                        ],
                    },
                    {
                        "outcome": "recommendation",
                        "node": "profiler",
                        "title": "capture CUDA graphs for the served shapes",
                        "summary": "launch-bound at batch 8",
                        "target": {"variant": "fp16"},
                        "changes": [{"path": "serving.engine", "old": None, "new": "graphs"}],
                    },
                    {"outcome": "refusal", "node": "quantization", "guardrail": "accuracy", "reason": "over budget"},
                ]
            }
        )
    )
    return path


def test_absent_agent_file_means_the_ladder_proposes_and_params_give_the_wait(tmp_path: Path) -> None:
    agent = read_agent(tmp_path / "latest.json")
    assert not agent.found
    assert agent.proposed_by("batching").startswith("ladder (no agent output at")
    wait, source, deployment = premium_wait(load_params(REPO / "params.yaml"), agent)
    assert (wait, deployment) == (2.0, "textcls-premium")  # params.yaml: textcls-premium max_wait_ms 2
    assert "deployments[textcls-premium]" in source


def test_agent_batching_recommendation_supplies_the_premium_wait(tmp_path: Path) -> None:
    agent = read_agent(_outcomes(tmp_path / "latest.json"))
    assert agent.found and len(agent.recommendations) == 2  # the refusal is not a recommendation
    batching = agent.batching_for("textcls-premium")
    assert batching is not None and (batching.max_batch_size, batching.max_wait_ms) == (16, 3.5)
    assert agent.batching_for("textcls-shared") is None
    wait, source, _ = premium_wait(load_params(REPO / "params.yaml"), agent)
    assert wait == 3.5 and source.startswith("agent batching recommendation")


def test_steps_name_the_agent_node_that_proposed_them(tmp_path: Path) -> None:
    agent = read_agent(_outcomes(tmp_path / "latest.json"))
    assert agent.proposed_by("batching") == "agent:batching (batching for textcls-premium)"
    assert agent.proposed_by("launch_overhead") == "agent:profiler (capture CUDA graphs for the served shapes)"
    assert agent.proposed_by("pruning") == "ladder (the agent proposed nothing for this step)"
    assert agent.proposed_by("quantization") == "ladder (the agent proposed nothing for this step)"


def test_unreadable_agent_file_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    path.write_text("{not json")
    agent = read_agent(path)
    assert not agent.found and agent.error is not None and "unreadable" in agent.error
