"""The INT8 ONNX settings the quantization node retries when a variant loses too much accuracy.

A variant refused on accuracy is rebuilt once with the RECOVERY_SETTINGS it does not use yet (only those: a
setting already in place was tried by the pipeline's own build). The list is short and explicit on purpose: each
entry is a setting of `infopt.params.Int8OnnxVariant` that usually buys accuracy back for a BERT-class encoder,
and every value a retry asks for is one the schema and the data allow, so the PR that sets it validates and
builds.
"""

from __future__ import annotations

import annotated_types
from ruamel.yaml import YAML

from agent.contract import ParamValue
from agent.params_edit import render
from infopt.params import Int8OnnxVariant, Params

CALIBRATION_GROWTH = 4  # a retry calibrates on this many times the texts: ranges settle, the build stays short
# The settings a retry may change, and why each usually recovers accuracy.
RECOVERY_SETTINGS: dict[str, str] = {
    "per_channel": "true where false: one scale per output channel, so a channel with outlier weights no longer "
    "coarsens the rounding of every other channel of its tensor",
    "calibration_samples": f"x{CALIBRATION_GROWTH} for static calibration: activation ranges measured on more "
    "texts clip fewer of the values the test split produces",
}


def _schema_max(setting: str) -> int | None:
    """The upper bound Int8OnnxVariant puts on an integer setting (None: unbounded), so a retry stays valid."""
    for bound in Int8OnnxVariant.model_fields[setting].metadata:
        if isinstance(bound, annotated_types.Le):
            return int(bound.le)  # type: ignore[call-overload]
        if isinstance(bound, annotated_types.Lt):
            return int(bound.lt) - 1  # type: ignore[call-overload]
    return None


def calibration_cap(params: Params) -> int | None:
    """The most calibration texts a static build can use: the schema's bound, and the train split's size when
    `data.max_train` says it (calibration draws from the train split; asking for more draws them all)."""
    caps = [cap for cap in (_schema_max("calibration_samples"), params.data.max_train) if cap is not None]
    return min(caps) if caps else None


def recovery_changes(variant: Int8OnnxVariant, params: Params) -> dict[str, ParamValue]:
    """The RECOVERY_SETTINGS `variant` does not use yet, as `variants[<name>].<setting>` -> value (empty: nothing
    left to try)."""
    where = f"variants[{variant.name}]"
    changes: dict[str, ParamValue] = {}
    if not variant.per_channel:
        changes[f"{where}.per_channel"] = True
    if variant.calibration == "static":
        cap = calibration_cap(params)
        samples = variant.calibration_samples * CALIBRATION_GROWTH
        samples = samples if cap is None else min(samples, cap)
        if samples > variant.calibration_samples:
            changes[f"{where}.calibration_samples"] = samples
    return changes


def written(params_text: str, name: str, setting: str) -> ParamValue:
    """What params.yaml writes for `variants[<name>].<setting>`, None where it leaves the schema's default (how a
    ParamChange's `old` reads an absent key)."""
    data = YAML(typ="safe").load(params_text)
    item = next(item for item in data["variants"] if item.get("name") == name)
    value: ParamValue = item.get(setting)
    return value


def settings_text(changes: dict[str, ParamValue]) -> str:
    """`variants[x].per_channel=true, ...`: the settings as a refusal or summary names them."""
    return ", ".join(f"{path}={render(value)}" for path, value in changes.items())
