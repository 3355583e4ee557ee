"""Label and annotation keys shared by the Pulumi program and the policy pack (one spelling, one place)."""

from __future__ import annotations

PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
PROJECT_LABEL = "infopt"
MODEL_SERVER = "model-server"

TENANT = "infopt.dev/tenant"  # on namespaces and pods; "shared" for a shared deployment's namespace
COST_CENTER = "infopt.dev/cost-center"
SLA_CLASS = "infopt.dev/sla-class"
DEPLOYMENT = "infopt.dev/deployment"
SHARED = "shared"

TENANTS_ANNOTATION = "infopt.dev/tenants"  # comma-separated, on a shared namespace
COST_CENTERS_ANNOTATION = "infopt.dev/cost-centers"
ARTIFACT_SHA256 = "infopt.dev/artifact-sha256"  # informational, for people: the policy pack reads the fetch itself
VARIANT = "infopt.dev/variant"
STACK = "infopt.dev/stack"
CONFIG_SHA256 = "infopt.dev/config-sha256"  # on the pod template: a config change rolls the pods


def server_selector(deployment: str) -> dict[str, str]:
    """The immutable selector of a serving Deployment: never includes the variant, which may change."""
    return {NAME: deployment, PART_OF: PROJECT_LABEL}
