"""MLflow for the LLM stages: one run per LLM variant and params hash (infopt.tracking.keyed_run), tagged
`infopt.model_kind: causal-lm`, with the same offline store and the same INFOPT_TRACKING switch as the
classifier's stages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from infopt.params import Params
from infopt.tracking import keyed_run, log_values, tracking_enabled

MODEL_KIND_TAG = "infopt.model_kind"


def log_llm_stage(
    params: Params,
    variant: str,
    stage: str,
    values: Mapping[str, Any],
    curves: Mapping[str, Iterable[float]] | None = None,
    prefix: str = "",
) -> str | None:
    """Log scalars (numbers as metrics, strings as params) and per-step curves into the LLM variant's run;
    returns the run id (None when tracking is off)."""
    if not tracking_enabled():
        return None
    if params.llm is not None:
        params.llm.variant(variant)  # KeyError naming the LLM variants if the name is unknown
    with keyed_run(params, variant, stage, tags={MODEL_KIND_TAG: "causal-lm"}) as run:
        log_values(values, curves, prefix)
        return run.info.run_id
