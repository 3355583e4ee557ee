"""Reading Kubernetes objects as the analyzer hands them over: camelCase props behind read-only proxies.

Only Mapping/Sequence access is used, because under `pulumi preview` the props are `unknown_checking_proxy`
objects. The quantity grammar is Kubernetes' own (decimal and binary suffixes, exponents), written here so
the pack needs nothing but the standard library and pulumi_policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

GPU = "nvidia.com/gpu"
QUOTA_RESOURCES = ("cpu", "memory", GPU)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)((?:[eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class QuantityError(ValueError):
    """A value is not a Kubernetes quantity."""


def parse_quantity(value: Any) -> Decimal:
    """'500m' -> 0.5, '1Gi' -> 1073741824, '1e3' -> 1000, 2 -> 2."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix]
    except InvalidOperation:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from None


def kind_of(resource_type: str) -> str:
    """'kubernetes:apps/v1:Deployment' -> 'Deployment'."""
    return resource_type.rsplit(":", 1)[-1]


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def metadata(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_map(props.get("metadata"))


def namespace_of(props: Mapping[str, Any]) -> str:
    """The object's namespace; an object without one lands in `default`."""
    return str(metadata(props).get("namespace") or "default")


def pod_template_of(kind: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod template ({metadata, spec}) of a workload; a Pod is its own template."""
    spec = as_map(props.get("spec"))
    if kind == "Pod":
        return {"metadata": metadata(props), "spec": spec}
    if kind == "CronJob":
        spec = as_map(as_map(spec.get("jobTemplate")).get("spec"))
    if kind in WORKLOADS:
        return as_map(spec.get("template"))
    return None


def pod_spec_of(kind: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    template = pod_template_of(kind, props)
    return None if template is None else as_map(template.get("spec"))


def containers_of(pod: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers"):
        for container in as_seq(pod.get(key)):
            yield as_map(container)


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the scheduler and ResourceQuota charge for one pod: the larger of the containers' sum and the
    largest init container, per resource; an extended resource given only as a limit is requested at it."""

    def requests_of(container: Mapping[str, Any]) -> dict[str, Decimal]:
        resources = as_map(container.get("resources"))
        merged = {**dict(as_map(resources.get("limits"))), **dict(as_map(resources.get("requests")))}
        return {name: parse_quantity(merged[name]) for name in QUOTA_RESOURCES if name in merged}

    total = {name: Decimal(0) for name in QUOTA_RESOURCES}
    for container in as_seq(pod.get("containers")):
        for name, amount in requests_of(as_map(container)).items():
            total[name] += amount
    for container in as_seq(pod.get("initContainers")):
        for name, amount in requests_of(as_map(container)).items():
            total[name] = max(total[name], amount)
    return total


def option(args: Sequence[Any], flag: str) -> str | None:
    """The value after `flag` in a container's args (`--sha256 X`), or of `flag=X`."""
    items = [str(item) for item in args]
    for index, item in enumerate(items):
        if item == flag and index + 1 < len(items):
            return items[index + 1]
        if item.startswith(flag + "="):
            return item[len(flag) + 1 :]
    return None


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    """A LabelSelector's matchLabels and matchExpressions against a label set."""
    for key, value in as_map(selector.get("matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expression in as_seq(selector.get("matchExpressions")):
        expression = as_map(expression)
        key, operator = expression.get("key"), expression.get("operator")
        values = [str(v) for v in as_seq(expression.get("values"))]
        present = key in labels
        if operator == "In" and not (present and str(labels[key]) in values):
            return False
        if operator == "NotIn" and present and str(labels[key]) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))
