"""What the agent proposed, read from the JSON file it writes (benchmarks/results/agent/latest.json).

The ladder does not import agent/: it reads the agent's outcomes (its Recommendation / Refusal / NoChange
records, serialised as JSON) and tolerates their absence. Accepted shapes: a list of outcomes, or an
object with `outcomes` (or `recommendations`). A recommendation counts for a ladder step when its node
matches the step (batching -> dynamic batching, quantization -> precision and fp8/int8, profiler ->
launch overhead / pruning when its title or summary names them); a batching recommendation for the
premium deployment supplies `max_wait_ms` (and `max_batch_size` as a cap) for step 3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

AGENT_FILE = Path("benchmarks/results/agent/latest.json")
STEP_NODES = {
    "precision": ("quantization",),
    "batching": ("batching",),
    "launch_overhead": ("profiler",),
    "pruning": ("profiler", "pruning"),
    "quantization": ("quantization",),
}
STEP_WORDS = {
    "launch_overhead": ("cuda graph", "torch.compile", "compile", "launch"),
    "pruning": ("prun", "sparsit", "2:4"),
}


class AgentBatching(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str
    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    title: str = ""


class AgentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    found: bool
    error: str | None = None
    recommendations: list[dict[str, Any]] = Field(default_factory=list)  # node, topic, title, target

    def proposed_by(self, step: str) -> str:
        """Who proposed a ladder step: the agent's node and title, or the ladder itself and why."""
        if not self.found:
            return f"ladder (no agent output at {self.path})"
        nodes, words = STEP_NODES.get(step, ()), STEP_WORDS.get(step)
        for item in self.recommendations:
            text = f"{item.get('title', '')} {item.get('summary', '')}".lower()
            if item.get("node") in nodes and (words is None or any(word in text for word in words)):
                return f"agent:{item.get('node')} ({item.get('title', '')})"
        return "ladder (the agent proposed nothing for this step)"

    def batching_for(self, deployment: str) -> AgentBatching | None:
        for item in self.recommendations:
            if item.get("node") != "batching" and item.get("topic") != "batching":
                continue
            if (item.get("target") or {}).get("deployment") != deployment:
                continue
            values: dict[str, Any] = {}
            for change in item.get("changes") or []:
                path = str(change.get("path", ""))
                if path.endswith("batching.max_batch_size"):
                    values["max_batch_size"] = int(change["new"])
                elif path.endswith("batching.max_wait_ms"):
                    values["max_wait_ms"] = float(change["new"])
            if values:
                return AgentBatching(deployment=deployment, title=str(item.get("title", "")), **values)
        return None


def read_agent(path: Path = AGENT_FILE) -> AgentInput:
    """The agent's recommendations from `path`; `found` False (with the reason) when there are none."""
    if not path.is_file():
        return AgentInput(path=str(path), found=False)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return AgentInput(path=str(path), found=False, error=f"unreadable: {error}")
    outcomes = raw if isinstance(raw, list) else raw.get("outcomes", raw.get("recommendations", []))
    if not isinstance(outcomes, list):
        return AgentInput(path=str(path), found=False, error="no list of outcomes in the file")
    keep = ("node", "topic", "title", "summary", "target", "changes")
    recommendations = [
        {key: item.get(key) for key in keep}
        for item in outcomes
        if isinstance(item, dict) and item.get("outcome", "recommendation") == "recommendation"
    ]
    return AgentInput(path=str(path), found=True, recommendations=recommendations)
