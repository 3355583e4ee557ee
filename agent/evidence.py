"""Missing evidence is a refusal, not a crash: the errors that mean "this input is not there", and the
per-deployment loop every node runs its examination in (agent/nodes.py does the same per node)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agent.capacity import CurveError
from agent.context import AgentContext
from agent.contract import Outcome, Refusal, Target
from agent.experiments import ExperimentError
from agent.prometheus import PrometheusError
from agent.traffic import TrafficError
from infopt.deployments import DeploymentError
from infopt.manifest import ManifestError

# ExperimentError: a DVC experiment run for missing evidence failed (its output tail is in the message)
MISSING_EVIDENCE = (ManifestError, DeploymentError, CurveError, TrafficError, PrometheusError, ExperimentError)


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
