"""The registry of nodes `infopt agent propose` runs, in order.

A node is a plain function `run(context: AgentContext) -> list[Outcome]` (agent/contract.py). Adding one is
one `NodeSpec` line in `registered_nodes()`; nothing else in the framework changes. Evidence a node cannot
find (no manifest, no sweep for the engine, no traffic) becomes a `Refusal` with guardrail "evidence" here,
so one node's missing input never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.capacity import CurveError
from agent.context import AgentContext
from agent.contract import Outcome, Refusal, Target
from agent.prometheus import PrometheusError
from agent.traffic import TrafficError
from infopt.deployments import DeploymentError
from infopt.manifest import ManifestError

NodeFn = Callable[[AgentContext], Sequence[Outcome]]
MISSING_EVIDENCE = (ManifestError, DeploymentError, CurveError, TrafficError, PrometheusError)


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


def each_deployment(
    context: AgentContext, node: str, examine: Callable[[str], Outcome | Sequence[Outcome]]
) -> list[Outcome]:
    """`examine` for every selected deployment; a deployment whose evidence is missing gets its own
    Refusal (guardrail "evidence") instead of stopping the node for the others."""
    outcomes: list[Outcome] = []
    for deployment in context.selected_deployments():
        try:
            found = examine(deployment)
        except MISSING_EVIDENCE as error:
            outcomes.append(
                Refusal(node=node, target=Target(deployment=deployment), guardrail="evidence", reason=str(error))
            )
            continue
        outcomes.extend(found if isinstance(found, Sequence) else [found])
    return outcomes
