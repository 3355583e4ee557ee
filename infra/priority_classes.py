"""One PriorityClass per params SLA class, so the scheduler protects premium pods the way the gateway does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from infopt.params import SlaClass
from infra.labels import PART_OF, PROJECT_LABEL, SLA_CLASS
from infra.resources import declare
from infra.topology import priority_class_name


def priority_class_doc(name: str, sla: SlaClass) -> dict[str, Any]:
    latency = f"p99 {sla.p99_ms:g} ms" if sla.p99_ms is not None else "no latency SLA"
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": priority_class_name(name), "labels": {PART_OF: PROJECT_LABEL, SLA_CLASS: name}},
        "value": sla.k8s_priority_value,
        "preemptionPolicy": "PreemptLowerPriority" if sla.preempts else "Never",
        "globalDefault": False,
        "description": f"infopt SLA class {name}: {latency}, timeout {sla.timeout_ms:g} ms",
    }


class PriorityClasses(pulumi.ComponentResource):
    """premium/standard/batch (whatever params.sla_classes defines); `names` maps class -> PriorityClass."""

    def __init__(
        self,
        name: str,
        sla_classes: Mapping[str, SlaClass],
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("infopt:infra:PriorityClasses", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        self.names = {sla_name: priority_class_name(sla_name) for sla_name in sla_classes}
        self.resources = [declare(priority_class_doc(n, sla), child) for n, sla in sla_classes.items()]
        self.register_outputs({"names": self.names})
