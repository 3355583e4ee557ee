"""params.yaml schema: the real file validates; each kind of bad value fails naming its field."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter
from ruamel.yaml import YAML
from typer.testing import CliRunner

from cli.main import app
from infopt.params import Params, ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict[str, Any]:
    return YAML(typ="safe").load((REPO / "params.yaml").read_text())


def _fails(raw: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_repository_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.baseline.name == "fp32"
    assert params.variant("int8-dynamic").kind == "int8_onnx"
    assert params.benchmark.batch_sizes == sorted(set(params.benchmark.batch_sizes))


def test_wrong_type_names_the_field(raw: dict[str, Any]) -> None:
    raw["train"]["epochs"] = "many"
    _fails(raw, "train.epochs", "integer")


def test_unknown_key_is_an_error(raw: dict[str, Any]) -> None:
    raw["benchmark"]["warmup"] = 3
    _fails(raw, "benchmark.warmup", "Extra inputs are not permitted")


def test_max_batch_size_zero(raw: dict[str, Any]) -> None:
    raw["serving"]["batching"]["max_batch_size"] = 0
    raw["serving"]["batching"]["preferred_batch_sizes"] = []
    _fails(raw, "serving.batching.max_batch_size", "greater than or equal to 1")


def test_prune_amount_out_of_range(raw: dict[str, Any]) -> None:
    index = next(i for i, v in enumerate(raw["variants"]) if v["kind"] == "pruned")
    raw["variants"][index]["amount"] = 1.5
    _fails(raw, f"variants.{index}.pruned.amount", "less than 1")


def test_undefined_sla_class(raw: dict[str, Any]) -> None:
    raw["tenants"][0]["sla_class"] = "gold"
    _fails(raw, "tenants[acme].sla_class 'gold' is not a defined SLA class")


def test_undefined_sla_class_name_in_classes(raw: dict[str, Any]) -> None:
    raw["sla_classes"]["gold"] = copy.deepcopy(raw["sla_classes"]["premium"])
    _fails(raw, "sla_classes: unknown class(es) ['gold']; allowed: ['premium', 'standard', 'batch']")


def test_unknown_variant_in_a_deployment(raw: dict[str, Any]) -> None:
    raw["deployments"][0]["variant"] = "int4-magic"
    _fails(raw, "deployments[textcls-premium].variant 'int4-magic' is not a variant")


def test_duplicate_variant_names(raw: dict[str, Any]) -> None:
    raw["variants"].append({"name": "fp32", "kind": "half"})
    _fails(raw, "variants: duplicate names")


def test_duplicate_tenant_names(raw: dict[str, Any]) -> None:
    raw["tenants"].append(copy.deepcopy(raw["tenants"][0]))
    _fails(raw, "tenants: duplicate names")


def test_unsorted_batch_sizes(raw: dict[str, Any]) -> None:
    raw["benchmark"]["batch_sizes"] = [4, 1]
    _fails(raw, "benchmark.batch_sizes", "strictly increasing")


def test_every_error_is_listed(raw: dict[str, Any]) -> None:
    raw["train"]["epochs"] = 0
    raw["profile"]["top_k"] = 0
    message = _fails(raw, "2 invalid value(s)", "train.epochs", "profile.top_k")
    assert message.startswith("params.yaml:")


def test_cli_check_exits_2_naming_the_field(raw: dict[str, Any], tmp_path: Path) -> None:
    raw["serving"]["batching"]["max_batch_size"] = 0
    raw["serving"]["batching"]["preferred_batch_sizes"] = []
    bad = tmp_path / "params.yaml"
    with bad.open("w") as handle:
        YAML().dump(raw, handle)
    result = CliRunner().invoke(app, ["params", "check", "--path", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "serving.batching.max_batch_size" in result.output


def test_cli_check_accepts_the_repository_params() -> None:
    result = CliRunner().invoke(app, ["params", "check", "--path", str(REPO / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "is valid" in result.output


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)


def _disagreements(default: BaseModel, raw: dict[str, Any], where: str) -> list[str]:
    """Keys params.yaml sets whose value differs from the schema's default instance (nested sections walked)."""
    found = []
    for key, value in raw.items():
        current = getattr(default, key)
        if isinstance(current, BaseModel) and isinstance(value, dict):
            found += _disagreements(current, value, f"{where}{key}.")
            continue
        validated = getattr(type(default).model_validate({**default.model_dump(), key: value}), key)
        if validated != current:
            found.append(f"{where}{key}: params.yaml {validated!r}, schema default {current!r}")
    return found


def _class_disagreements(model: type[BaseModel], raw: dict[str, Any], where: str) -> list[str]:
    """As _disagreements, against a model class's field defaults (for sections whose default is None)."""
    found = []
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if field is None or field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel) and isinstance(value, dict):
            found += _disagreements(default, value, f"{where}{key}.")
            continue
        validated = TypeAdapter(field.annotation).validate_python(value)
        if validated != default:
            found.append(f"{where}{key}: params.yaml {validated!r}, schema default {default!r}")
    return found


def test_schema_defaults_agree_with_the_committed_params_yaml(raw: dict[str, Any]) -> None:
    """Every default exists once: where params.yaml states a section's value, the schema's default is the same
    value, so deleting a line changes nothing. (Lists of variants, tenants and deployments have no defaults.)"""
    sections = {name: value for name, value in raw.items() if name not in ("variants", "tenants", "deployments")}
    singletons = {"seed", "device"}
    problems = []
    for name, value in sections.items():
        field = Params.model_fields[name]
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        if default is None and isinstance(value, dict):  # an optional section (llm): its class's defaults
            section = next(
                t for t in typing.get_args(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)
            )
            problems += _class_disagreements(section, value, f"{name}.")
            continue
        if name in singletons:
            if value != default:
                problems.append(f"{name}: params.yaml {value!r}, schema default {default!r}")
            continue
        problems += _disagreements(default, value, f"{name}.")
    assert not problems, "params.yaml and the schema disagree:\n" + "\n".join(problems)


def test_params_yaml_is_written_the_way_dvc_exp_run_writes_it() -> None:
    """`dvc exp run -S key=value` re-dumps params.yaml with DVC's YAML settings: the committed file is already
    in that form, so an experiment's diff is the changed line alone."""
    import io

    from dvc.utils.serialize._yaml import _dump, parse_yaml_for_update

    text = (REPO / "params.yaml").read_text()
    stream = io.StringIO()
    _dump(parse_yaml_for_update(text, "params.yaml"), stream)
    assert stream.getvalue() == text
