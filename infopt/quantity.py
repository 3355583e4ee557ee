"""Kubernetes resource quantities: the one grammar (validation in params and stack config), exact numbers
for quota arithmetic, and the CPU threads a container's allotment gives an engine.

The `kubernetes` client (which ships `parse_quantity`) is not a dependency of this project; the grammar
needed here is the documented suffix table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator

_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}
_FORM = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity this project uses."""


def parse_quantity(value: str | int | float) -> Decimal:
    """'500m' -> 0.5, '1Gi' -> 1073741824, 2 -> 2."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _FORM.match(str(value).strip())
    if not match:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity (e.g. '500m', '8Gi', '2')")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]


def _checked(value: str) -> str:
    parse_quantity(value)  # QuantityError is a ValueError: pydantic reports it under the field's key path
    return value


Quantity = Annotated[str, AfterValidator(_checked)]  # a validated quantity string: '4', '500m', '8Gi'


def cpu_threads(cpu: str | int | float) -> int:
    """Engine threads for a CPU allotment: whole cores, rounded up, at least one ('500m' -> 1, '2' -> 2)."""
    return max(1, math.ceil(parse_quantity(cpu)))


def format_cpu(cores: Decimal) -> str:
    """Exact CPU quantity: whole cores when possible, else millicores."""
    millis = cores * 1000
    return str(int(cores)) if cores == cores.to_integral_value() else f"{int(millis)}m"


def format_memory(size: Decimal) -> str:
    """Exact memory quantity in the largest binary unit that divides it."""
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _SUFFIX[suffix]
        if size % unit == 0:
            return f"{int(size / unit)}{suffix}"
    return str(int(size))


QUOTA_RESOURCES = ("cpu", "memory", "nvidia.com/gpu")


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the scheduler and ResourceQuota charge for one pod: per resource, the larger of the sum over
    containers and the largest init container (init containers run one at a time, before the others)."""

    def requests_of(container: Mapping[str, Any]) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        # An extended resource given only as a limit is requested at that limit (Kubernetes defaulting).
        merged = {**dict(resources.get("limits") or {}), **dict(resources.get("requests") or {})}
        return {name: parse_quantity(merged[name]) for name in QUOTA_RESOURCES if name in merged}

    total = {name: Decimal(0) for name in QUOTA_RESOURCES}
    for container in pod_spec.get("containers") or []:
        for name, amount in requests_of(container).items():
            total[name] += amount
    for container in pod_spec.get("initContainers") or []:
        for name, amount in requests_of(container).items():
            total[name] = max(total[name], amount)
    return total
