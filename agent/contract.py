"""The node contract: every node is a plain, typed function from evidence to outcomes.

A node returns a list of outcomes, one per target it looked at:

- `Recommendation`: params.yaml changes (key paths with old and new values) for one target, the predicted
  before/after metrics, the SLA predictions and accuracy decision the guardrails check, the evidence it
  used (files, MLflow run ids, Prometheus queries, DVC experiments, simulations) and the risks.
- `Refusal`: the node looked and will not propose a change; `guardrail` says which rule stopped it and
  `reason` says why, in words a reviewer can act on.
- `NoChange`: the evidence supports what params.yaml already says.

Nodes never edit files or talk to git: `agent.proposal` turns one Recommendation into a pull request after
the guardrails (`agent.guardrails`) pass. Everything here is pydantic, so outcomes serialise to JSON as-is.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

ParamValue = JsonValue  # what a params key can hold: scalars, lists and mappings of them

Guardrail = Literal["params_schema", "accuracy", "sla", "policy", "evidence"]
EvidenceKind = Literal[
    "file", "mlflow_run", "prometheus_query", "dvc_experiment", "simulation", "trace", "measurement", "profile"
]
NodeName = str  # "scaling", "batching", "quantization", "profiler"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamChange(_Model):
    """One params.yaml edit. `path` uses the names params errors use: `deployments[textcls-premium].replicas.min`
    (a `[name]` selects the list item whose `name` is that value; `[3]` selects by index)."""

    path: str
    old: ParamValue  # None when the key is absent today
    new: ParamValue
    why: str = ""


class Interval(_Model):
    low: float
    high: float
    confidence: float = 0.95


class AccuracyDecision(_Model):
    """The manifest's non-inferiority decision for a variant, as the accuracy guardrail reads it.

    The quantization node copies it from the manifest (issue #8: the upper bound of the paired loss vs the
    baseline within `max_accuracy_loss`); the guardrail refuses anything but `within_budget`, never a point
    estimate.
    """

    variant: str
    baseline: str
    decision: Literal["within_budget", "over_budget", "inconclusive"]
    budget: float  # params.evaluate.max_accuracy_loss, as a fraction
    accuracy: float | None = None
    accuracy_interval: Interval | None = None
    loss: float | None = None  # paired loss vs the baseline, as a fraction (positive = worse)
    loss_interval: Interval | None = None
    source: str = ""  # where the decision was read (file and key)


class Metric(_Model):
    """One row of the before/after table, in the style of `dvc metrics diff`."""

    name: str
    before: float | None
    after: float | None
    unit: str = ""
    source: str = ""  # the file or computation the numbers come from
    better: Literal["higher", "lower"] | None = None
    after_interval: Interval | None = None

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None or math.isinf(self.before) or math.isinf(self.after):
            return None
        return self.after - self.before


class SlaPrediction(_Model):
    """A predicted p99 for one SLA class at one load; the SLA guardrail refuses when it exceeds the class's SLA."""

    sla_class: str
    load_rps: float
    replicas: int
    p99_ms: float
    sla_p99_ms: float | None  # None: the class has no latency SLA (only its failure budget is checked)
    failed_fraction: float = 0.0  # rejected or past the deadline
    max_failed_fraction: float = 0.01
    what: str = ""  # "at the trace's p95 load with min replicas"

    @property
    def meets(self) -> bool:
        latency_ok = self.sla_p99_ms is None or self.p99_ms <= self.sla_p99_ms
        return latency_ok and self.failed_fraction <= self.max_failed_fraction


class Evidence(_Model):
    kind: EvidenceKind
    ref: str  # path, run id, PromQL, experiment name
    detail: str = ""


class Target(_Model):
    deployment: str | None = None
    variant: str | None = None
    engine: str | None = None
    sla_class: str | None = None

    @property
    def label(self) -> str:
        return self.deployment or self.variant or "params"


class Recommendation(_Model):
    outcome: Literal["recommendation"] = "recommendation"
    node: NodeName
    topic: str  # short slug naming the kind of change: "scaling", "batching", "quantization", "profile"
    title: str
    summary: str  # the one-paragraph claim ("2 replicas serve 95% of the trace, a 3rd for spikes")
    target: Target
    changes: list[ParamChange] = Field(min_length=1)
    metrics: list[Metric] = Field(default_factory=list)
    sla: list[SlaPrediction] = Field(default_factory=list)
    accuracy: AccuracyDecision | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    risks: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # report lines ("batch 16: 200 req/s, p99 45 ms, $0.001/1k")
    # The DVC experiment whose manifest the change deploys (a variant it enables exists only there until the PR's
    # `dvc repro`); None: the pipeline's manifest.
    manifest_experiment: str | None = None


class Refusal(_Model):
    outcome: Literal["refusal"] = "refusal"
    node: NodeName
    target: Target
    guardrail: Guardrail
    reason: str
    evidence: list[Evidence] = Field(default_factory=list)


class NoChange(_Model):
    outcome: Literal["no_change"] = "no_change"
    node: NodeName
    target: Target
    reason: str
    evidence: list[Evidence] = Field(default_factory=list)


Outcome = Annotated[Recommendation | Refusal | NoChange, Field(discriminator="outcome")]
