"""Metrics plumbing for the HPA: Prometheus scrapes the gateways, prometheus-adapter serves the queue length.

- One ServiceMonitor (prometheus-operator CRD `monitoring.coreos.com/v1`) per serving namespace selects the
  model-server Services and scrapes `/metrics` on the `http` port; its labels are the stack's
  `serviceMonitorLabels` (what the Prometheus `serviceMonitorSelector` matches, e.g.
  `release: kube-prometheus-stack`). It copies the Service label `app.kubernetes.io/part-of` onto every
  series (`targetLabels`), as `app_kubernetes_io_part_of="infopt"`.
- prometheus-adapter is a Helm release of this program (chart prometheus-community/prometheus-adapter) whose
  values carry the rules, so the rules are part of the adapter's release: a change of them upgrades the
  release and rolls the adapter. The rules select series by that label, never by namespace: the adapter
  re-lists the series matching each `seriesQuery` every `metricsRelistInterval` (1m by default), so the
  pods of a new serving namespace get their metric within a minute, without a rules change or a restart.
  They expose the gateway gauge `request_queue_length` as a custom Pods metric, and the gateway's
  `infopt_vllm_num_requests_waiting` (vLLM's `vllm:num_requests_waiting`, re-exported) as
  `vllm_num_requests_waiting`. With `metricsAdapter.install: false` the rules are the stack output
  `adapterRules`, to put into the values of the adapter the cluster already runs.
"""

from __future__ import annotations

import io
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from ruamel.yaml import YAML

from infra.labels import COMPONENT, MODEL_SERVER, PART_OF, PROJECT_LABEL
from infra.resources import declare
from infra.topology import Topology

QUEUE_METRIC = "request_queue_length"
VLLM_WAITING = ("infopt_vllm_num_requests_waiting", "vllm_num_requests_waiting")  # series -> exposed name
SCOPE_LABEL = PART_OF.replace(".", "_").replace("/", "_").replace("-", "_")  # as Prometheus sanitizes it


def _pods_rule(series: str, exposed: str) -> dict[str, Any]:
    selector = f'{series}{{namespace!="",pod!="",{SCOPE_LABEL}="{PROJECT_LABEL}"}}'
    return {
        "seriesQuery": selector,
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{series}$", "as": exposed},
        "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
    }


def adapter_rules() -> list[dict[str, Any]]:
    """The custom-metrics rules; the same for every stack and namespace (they select by label)."""
    return [_pods_rule(QUEUE_METRIC, QUEUE_METRIC), _pods_rule(*VLLM_WAITING)]


def adapter_rules_yaml() -> str:
    buffer = io.StringIO()
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 4096  # PromQL selectors stay on one line
    yaml.dump({"rules": adapter_rules()}, buffer)
    return buffer.getvalue()


def adapter_release_args(topology: Topology) -> dict[str, Any] | None:
    """Inputs of the prometheus-adapter Helm release (None when the stack does not install it)."""
    stack = topology.stack
    adapter = stack.metrics_adapter
    if not adapter.install:
        return None
    return {
        "name": adapter.release_name,
        "chart": "prometheus-adapter",
        "version": adapter.chart_version,
        "namespace": stack.monitoring_namespace,
        "repository_opts": {"repo": adapter.repository},
        "values": {
            "prometheus": {"url": adapter.prometheus_url, "port": adapter.prometheus_port},
            "metricsRelistInterval": adapter.relist_interval,
            "rules": {"default": adapter.default_rules, "custom": adapter_rules()},
        },
    }


def metrics_docs(topology: Topology) -> list[dict[str, Any]]:
    stack = topology.stack
    return [
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
                "targetLabels": [PART_OF],
                "endpoints": [{"port": "http", "path": "/metrics", "interval": stack.scrape_interval}],
            },
        }
        for namespace in topology.serving_namespaces
    ]


class MetricsPlumbing(pulumi.ComponentResource):
    """ServiceMonitors in the serving namespaces (after them) and the prometheus-adapter release."""

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
        self.resources: list[pulumi.Resource] = [declare(doc, child) for doc in self.docs]
        release = adapter_release_args(topology)
        if release is not None:
            opts_ = pulumi.ResourceOptions(parent=self, provider=provider)
            repository = k8s.helm.v3.RepositoryOptsArgs(**release.pop("repository_opts"))
            self.resources.append(
                k8s.helm.v3.Release("prometheus-adapter", opts=opts_, repository_opts=repository, **release)
            )
        self.rules_yaml = adapter_rules_yaml()
        self.register_outputs({"serviceMonitors": len(self.docs), "adapterRules": self.rules_yaml})
