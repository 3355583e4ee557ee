"""MLflow for the LLM stages: one run per LLM variant and params hash (infopt.tracking.keyed_run), tagged
`infopt.model_kind: causal-lm`, with the same offline store and the same INFOPT_TRACKING switch as the
classifier's stages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from infopt.params import Params
from infopt.tracking import keyed_run, split_for_mlflow, tracking_enabled

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
    import mlflow

    if params.llm is not None:
        params.llm.variant(variant)  # KeyError naming the LLM variants if the name is unknown
    metrics, text = split_for_mlflow({f"{prefix}{key}": value for key, value in values.items()})
    with keyed_run(params, variant, stage, tags={MODEL_KIND_TAG: "causal-lm"}) as run:
        if metrics:
            mlflow.log_metrics(metrics)
        logged = mlflow.active_run().data.params
        fresh = {key: value for key, value in text.items() if key not in logged}
        if fresh:
            mlflow.log_params(fresh)
        for name, series in (curves or {}).items():
            for step, value in enumerate(series, start=1):
                mlflow.log_metric(f"{prefix}{name}", float(value), step=step)
        return run.info.run_id
