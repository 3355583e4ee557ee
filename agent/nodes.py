"""The registry of nodes `infopt agent propose` runs, in order.

A node is a plain function `run(context: AgentContext) -> list[Outcome]` (agent/contract.py). Adding one is
one `NodeSpec` line in `registered_nodes()`; nothing else in the framework changes. Evidence a node cannot
find (no manifest, no sweep for the engine, no traffic) becomes a `Refusal` with guardrail "evidence" here
(per deployment inside a node: agent/evidence.py), so one node's missing input never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.context import AgentContext
from agent.contract import Outcome, Refusal, Target
from agent.evidence import MISSING_EVIDENCE

NodeFn = Callable[[AgentContext], Sequence[Outcome]]


@dataclass(frozen=True)
class NodeSpec:
    name: str
    run: NodeFn
    description: str


def registered_nodes() -> list[NodeSpec]:
    """Every node, in the order their proposals are preferred when several apply: a batching change is a
    config change of the running model (cheapest to review and revert), a variant change swaps the model, a
    profiler change swaps the engine or precision, and scaling depends on the capacity the others set."""
    from agent import batching, profiler, quantization, scaling

    return [
        NodeSpec("batching", batching.run, "max_batch_size per deployment under its SLA class from the sweep"),
        NodeSpec("quantization", quantization.run, "a cheaper variant, only when non-inferior and cheaper at the SLA"),
        NodeSpec("profiler", profiler.run, "the profiled bottleneck and the measured change that cuts it"),
        NodeSpec("scaling", scaling.run, "min/max replicas and the HPA queue target from traffic and capacity"),
    ]


def run_nodes(context: AgentContext, nodes: Sequence[NodeSpec] | None = None) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for node in registered_nodes() if nodes is None else nodes:
        try:
            outcomes.extend(node.run(context))
        except MISSING_EVIDENCE as error:
            outcomes.append(Refusal(node=node.name, target=Target(), guardrail="evidence", reason=str(error)))
    return outcomes
