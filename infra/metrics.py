"""Metrics plumbing for the HPA: Prometheus scrapes the gateways, prometheus-adapter serves the queue length.

- One ServiceMonitor (prometheus-operator CRD `monitoring.coreos.com/v1`) per serving namespace selects the
  model-server Services and scrapes `/metrics` on the `http` port; its labels are the stack's
  `serviceMonitorLabels` (what the Prometheus `serviceMonitorSelector` matches, e.g.
  `release: kube-prometheus-stack` for the kube-prometheus-stack chart).
- One ConfigMap holds the prometheus-adapter rules (key `config.yaml`). It matches the
  prometheus-community/prometheus-adapter Helm chart installed with `rules.existing: <adapterConfigMap>`
  (the chart then skips its own ConfigMap and mounts this one at /etc/adapter) in the same namespace
  (`monitoringNamespace`). The rules expose the gateway gauge `request_queue_length` as a custom Pods
  metric, and for vLLM deployments `infopt_vllm_num_requests_waiting` as `vllm_num_requests_waiting`.
"""

from __future__ import annotations

import io
from typing import Any

import pulumi
from ruamel.yaml import YAML

from infra.labels import COMPONENT, MODEL_SERVER, PART_OF, PROJECT_LABEL
from infra.resources import declare
from infra.topology import Topology

QUEUE_METRIC = "request_queue_length"
VLLM_WAITING = ("infopt_vllm_num_requests_waiting", "vllm_num_requests_waiting")  # series -> exposed name


def _pods_rule(series: str, exposed: str, namespaces: list[str]) -> dict[str, Any]:
    selector = f'{series}{{namespace=~"{"|".join(namespaces)}",pod!=""}}'
    return {
        "seriesQuery": selector,
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{series}$", "as": exposed},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    }


def adapter_rules(topology: Topology) -> dict[str, Any]:
    namespaces = topology.serving_namespaces
    rules = [_pods_rule(QUEUE_METRIC, QUEUE_METRIC, namespaces)]
    vllm_namespaces = sorted({p.namespace for p in topology.services if p.deployment.engine == "vllm"})
    if vllm_namespaces:
        rules.append(_pods_rule(*VLLM_WAITING, vllm_namespaces))
    return {"rules": rules}


def metrics_docs(topology: Topology) -> list[dict[str, Any]]:
    stack = topology.stack
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {
                "name": "infopt-model-servers",
                "namespace": namespace,
                "labels": {PART_OF: PROJECT_LABEL, **stack.service_monitor_labels},
            },
            "spec": {
                "selector": {"matchLabels": {PART_OF: PROJECT_LABEL, COMPONENT: MODEL_SERVER}},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": stack.scrape_interval}],
            },
        }
        for namespace in topology.serving_namespaces
    ]
    buffer = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 4096  # PromQL selectors stay on one line
    yaml.dump(adapter_rules(topology), buffer)
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": stack.adapter_config_map,
                "namespace": stack.monitoring_namespace,
                "labels": {PART_OF: PROJECT_LABEL},
            },
            "data": {"config.yaml": buffer.getvalue()},
        }
    )
    return docs


class MetricsPlumbing(pulumi.ComponentResource):
    """ServiceMonitors in the serving namespaces (after them) and the adapter rules ConfigMap."""

    def __init__(
        self,
        name: str,
        topology: Topology,
        provider: pulumi.ProviderResource,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("infopt:infra:MetricsPlumbing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends_on)
        self.docs = metrics_docs(topology)
        self.resources = [declare(doc, child) for doc in self.docs]
        self.register_outputs({"serviceMonitors": len(self.docs) - 1})
