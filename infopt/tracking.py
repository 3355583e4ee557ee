"""MLflow tracking: ONE run per variant, shared by every pipeline stage.

Each stage is its own process (`python -m model_builds.<stage>`), so the run is found again by tags rather
than passed around: {infopt.variant: <name>, infopt.params_sha: sha256(params.yaml)[:12]}. The first stage
that logs for a variant creates it; train, variants, evaluate, benchmark and manifest all log into it.

    with variant_run(params, "int8-dynamic", stage="benchmark") as run:
        mlflow.log_metric("batch_1_latency_p99_ms", 3.2)

INFOPT_TRACKING=off in the environment turns MLflow logging off for every stage (`tracking_enabled()`):
for machines without mlflow or without a store, e.g. a GPU host that only produces the metrics files.
The metrics files, plots and manifest are written exactly as with tracking on; only the runs are missing
(manifest entries then have no mlflow_run_id).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infopt.manifest import AccuracyReport, Artifact, BatchPoint, Decision, Fingerprint, Sweep
from infopt.params import Params

if TYPE_CHECKING:
    import mlflow

VARIANT_TAG = "infopt.variant"
PARAMS_SHA_TAG = "infopt.params_sha"
STAGE_TAG_PREFIX = "infopt.stage."
MODEL_TAG = "infopt.model_sha256"
# Offline, quiet, fast: no telemetry, no progress bars, no environment inference over the network.
OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "GIT_PYTHON_REFRESH": "quiet",
}
# Logged with each ONNX model so MLflow does not spend ~16 s inferring requirements.
ONNX_PIP_REQUIREMENTS = ("onnx", "onnxruntime", "numpy")


TRACKING_ENV = "INFOPT_TRACKING"
_OFF_VALUES = frozenset({"off", "0", "false", "no", "disabled"})


def tracking_enabled() -> bool:
    """False when INFOPT_TRACKING is off/0/false/no/disabled (any case); MLflow logging is on otherwise."""
    return os.environ.get(TRACKING_ENV, "").strip().lower() not in _OFF_VALUES


class TrackingError(RuntimeError):
    """The tracking store could not be opened or a run could not be found/created."""


def tracking_uri(params: Params, cwd: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI, else params.tracking.uri; a relative sqlite path is made absolute under cwd.

    Absolute so a stage run from a DVC temp copy or a sub-folder still writes the repository's store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix) :]
        if not path.startswith("/"):
            path = str((cwd or Path.cwd()).resolve() / path)
        return prefix + path
    return uri


def params_sha(params_path: str | Path = "params.yaml") -> str:
    """First 12 hex digits of sha256 over the params file's bytes: the run key beside the variant name."""
    path = Path(params_path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as error:
        raise TrackingError(f"cannot read {path} to key the MLflow run: {error}") from None


def _artifact_location(uri: str) -> str | None:
    """Keep artifacts next to a sqlite store (mlartifacts/), not in whatever folder the stage ran from."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        return (Path(uri[len(prefix) :]).parent / "mlartifacts").as_uri()
    return None


def configure(params: Params) -> str:
    """Point mlflow at the store offline and make sure the experiment exists; returns its id."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    name = params.tracking.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        return mlflow.create_experiment(name, artifact_location=_artifact_location(uri))
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} at {uri} is deleted; restore it or rename tracking.experiment")
    return experiment.experiment_id


def find_run_id(experiment_id: str, variant: str, sha: str) -> str | None:
    """The oldest live run tagged with this variant and params hash, if any."""
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{VARIANT_TAG}` = '{variant}' and tags.`{PARAMS_SHA_TAG}` = '{sha}'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


@contextmanager
def variant_run(
    params: Params, variant_name: str, stage: str, params_path: str | Path = "params.yaml"
) -> Iterator[mlflow.ActiveRun]:
    """Find-or-create the variant's run for this params.yaml and make it the active run for `stage`."""
    import mlflow

    params.variant(variant_name)  # KeyError naming the variants if the name is unknown
    experiment_id = configure(params)
    sha = params_sha(params_path)
    run_id = find_run_id(experiment_id, variant_name, sha)
    if run_id is None:
        run = mlflow.MlflowClient().create_run(
            experiment_id,
            tags={VARIANT_TAG: variant_name, PARAMS_SHA_TAG: sha, "mlflow.runName": f"{variant_name}-{sha}"},
            run_name=f"{variant_name}-{sha}",
        )
        run_id = run.info.run_id
    with mlflow.start_run(run_id=run_id) as active:
        mlflow.set_tag(f"{STAGE_TAG_PREFIX}{stage}", "done")
        yield active


@contextmanager
def keyed_run(
    params: Params,
    run_key: str,
    stage: str,
    tags: Mapping[str, str] | None = None,
    params_path: str | Path = "params.yaml",
) -> Iterator[mlflow.ActiveRun]:
    """`variant_run` for what is not a classifier variant (an LLM variant, a benchmark): the run is found
    again by the same two tags, {infopt.variant: run_key, infopt.params_sha}, plus any extra `tags`."""
    import mlflow

    experiment_id = configure(params)
    sha = params_sha(params_path)
    run_id = find_run_id(experiment_id, run_key, sha)
    if run_id is None:
        run = mlflow.MlflowClient().create_run(
            experiment_id,
            tags={VARIANT_TAG: run_key, PARAMS_SHA_TAG: sha, "mlflow.runName": f"{run_key}-{sha}", **(tags or {})},
            run_name=f"{run_key}-{sha}",
        )
        run_id = run.info.run_id
    with mlflow.start_run(run_id=run_id) as active:
        mlflow.set_tag(f"{STAGE_TAG_PREFIX}{stage}", "done")
        yield active


def log_fingerprint(fp: Fingerprint | Mapping[str, Any]) -> None:
    """Fingerprint as tags of the active run (fingerprint.<field>, fingerprint.lib.<library>)."""
    import mlflow

    data = fp.model_dump() if isinstance(fp, Fingerprint) else dict(fp)
    tags: dict[str, str] = {}
    for key, value in data.items():
        if key == "libraries":
            tags.update({f"fingerprint.lib.{lib}": str(version) for lib, version in dict(value).items()})
        elif value is not None:
            tags[f"fingerprint.{key}"] = str(value)
    mlflow.set_tags(tags)


def batch_metrics(point: BatchPoint, prefix: str = "") -> dict[str, float]:
    """The spec's per-batch metric names; `prefix` is '' for the primary engine or '<engine>_'."""
    size = point.batch_size
    base = f"{prefix}batch_{size}_"
    return {
        f"{base}throughput_req_sec": point.throughput_rps,
        f"{base}latency_p50_ms": point.latency_p50_ms,
        f"{base}latency_p95_ms": point.latency_p95_ms,
        f"{base}latency_p99_ms": point.latency_p99_ms,
        f"{base}cost_usd": point.cost_per_1k_usd / 1000.0,  # per request, as the spec names it
        f"{base}cost_per_1k_usd": point.cost_per_1k_usd,
        f"{base}peak_memory_mb": point.peak_memory_mb,
    }


def primary_engine(engines: Iterable[str]) -> str | None:
    """The engine whose numbers get the unprefixed names: onnxruntime where measured, else torch."""
    engines = list(engines)
    if "onnxruntime" in engines:
        return "onnxruntime"
    return engines[0] if engines else None


def log_benchmark(sweeps: Iterable[Sweep]) -> None:
    """Log every sweep into the active run as `<engine>_<threads>t_batch_<n>_...`; the primary engine's sweep with
    the most threads also gets the spec's unprefixed names (`batch_16_throughput_req_sec`)."""
    import mlflow

    sweeps = list(sweeps)
    primary = primary_engine(sweep.engine for sweep in sweeps)
    main = max((s for s in sweeps if s.engine == primary), key=lambda s: s.threads, default=None)
    metrics: dict[str, float] = {}
    for sweep in sweeps:
        for point in sweep.points:
            metrics.update(batch_metrics(point, prefix=f"{sweep.engine}_{sweep.threads}t_"))
            if sweep is main:
                metrics.update(batch_metrics(point))
    if metrics:
        mlflow.log_metrics(metrics)


def log_accuracy(kind: str, quality: AccuracyReport, decision: Decision | None) -> None:
    """accuracy and macro_f1 with their interval bounds; accuracy_loss (paired, vs the baseline) with its
    upper bound and `<kind>_accuracy_loss` (e.g. int8_accuracy_loss), as the spec names it."""
    import mlflow

    metrics = {
        "accuracy": quality.accuracy.estimate,
        "accuracy_ci_low": quality.accuracy.low,
        "accuracy_ci_high": quality.accuracy.high,
        "macro_f1": quality.macro_f1.estimate,
        "macro_f1_ci_low": quality.macro_f1.low,
        "macro_f1_ci_high": quality.macro_f1.high,
    }
    if decision is not None:
        short_kind = {"int8_onnx": "int8"}.get(kind, kind)
        metrics |= {
            "accuracy_loss": decision.loss.estimate,
            "accuracy_loss_ci_high": decision.loss.high,
            f"{short_kind}_accuracy_loss": decision.loss.estimate,
            "within_accuracy_budget": float(decision.within_budget),
        }
    mlflow.log_metrics(metrics)


def log_variant_params(params: Params, variant_name: str) -> None:
    """The variant's own params (kind, dtype, amount, student dims, ...) flattened as run params."""
    import mlflow

    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = str(value)

    walk("variant", params.variant(variant_name).model_dump())
    walk("model", {"preset": params.model.preset, "max_seq_len": params.model.max_seq_len})
    flat["device"] = params.device
    existing = mlflow.active_run()
    logged = existing.data.params if existing is not None else {}
    fresh = {key: value for key, value in flat.items() if key not in logged}
    if fresh:
        mlflow.log_params(fresh)


def log_model(artifact: Artifact, root: Path = Path(".")) -> bool:
    """Log the variant's artifact once per content hash: ONNX via mlflow.onnx, an HF folder as artifacts.

    Returns False when the run already holds this exact artifact (same sha256), so re-runs stay fast.
    """
    import mlflow

    client = mlflow.MlflowClient()
    run = mlflow.active_run()
    if run is None:
        raise TrackingError("log_model needs an active run (use variant_run)")
    tag = f"{MODEL_TAG}.{artifact.engine}"
    if client.get_run(run.info.run_id).data.tags.get(tag) == artifact.sha256:
        return False
    path = root / artifact.path
    if artifact.format == "onnx":
        import mlflow.onnx
        import onnx

        model_file = path / "model.onnx" if path.is_dir() else path
        mlflow.onnx.log_model(
            onnx_model=onnx.load(str(model_file)),
            name="onnx_model",
            pip_requirements=list(ONNX_PIP_REQUIREMENTS),
            save_as_external_data=False,
        )
        if path.is_dir():  # tokenizer files that serve with the graph
            for item in sorted(path.iterdir()):
                if item.is_file() and item.name != "model.onnx":
                    mlflow.log_artifact(str(item), artifact_path="onnx_tokenizer")
    else:
        mlflow.log_artifacts(str(path), artifact_path="hf_model")
    mlflow.set_tag(tag, artifact.sha256)
    return True


def split_for_mlflow(values: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers (bools as 0/1) become metrics, strings become params; lists and None are left out."""
    metrics: dict[str, float] = {}
    text: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool | int | float):
            metrics[key] = float(value)
        elif isinstance(value, str):
            text[key] = value
    return metrics, text


def log_stage(
    params: Params,
    variant_name: str,
    stage: str,
    values: Mapping[str, Any],
    curves: Mapping[str, Iterable[float]] | None = None,
    prefix: str = "",
) -> None:
    """Log one stage's results into the variant's run: scalars as metrics/params, `curves` as per-step metrics.

    A stage's own keys get `prefix` (e.g. 'train_'), so stages never overwrite each other's names.
    Does nothing when tracking is off (INFOPT_TRACKING), so stages call it unconditionally.
    """
    if not tracking_enabled():
        return
    import mlflow

    metrics, text = split_for_mlflow({f"{prefix}{key}": value for key, value in values.items()})
    with variant_run(params, variant_name, stage=stage):
        if metrics:
            mlflow.log_metrics(metrics)
        active = mlflow.active_run()
        assert active is not None  # variant_run started it
        logged = active.data.params  # params are immutable in MLflow: log only new keys
        fresh = {key: value for key, value in text.items() if key not in logged}
        if fresh:
            mlflow.log_params(fresh)
        for name, series in (curves or {}).items():
            for step, value in enumerate(series, start=1):
                mlflow.log_metric(f"{prefix}{name}", float(value), step=step)
