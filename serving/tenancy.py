"""Who is calling, which SLA class they get, and whether their quota admits the request.

API keys are never stored: params hold sha256 digests and each presented key's digest is compared with
hmac.compare_digest against every stored digest (no early exit), so timing says nothing about near-misses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infopt.params import SlaClass, Tenant
from serving.buckets import TokenBucket
from serving.errors import BadRequest, RateLimited, Unauthorized


@dataclass(frozen=True)
class TenantContext:
    """The resolved caller: everything a request handler needs about its tenant and class."""

    name: str
    sla_class: str
    priority: int  # lower is served first (vLLM convention)
    timeout_s: float  # deadline from arrival
    cost_center: str
    charge: str = "rows"  # what one unit of the request bucket is: requests | rows | tokens


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer <key>` or `x-api-key: <key>`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class Tenancy:
    """Authentication and per-tenant request/token buckets for the tenants of one deployment."""

    def __init__(self, tenants: Sequence[Tenant], sla_classes: Mapping[str, SlaClass]) -> None:
        self._tenants = {tenant.name: tenant for tenant in tenants}
        self._digests = [(digest, tenant.name) for tenant in tenants for digest in tenant.api_key_sha256]
        self._contexts: dict[str, TenantContext] = {}
        for tenant in tenants:
            sla = sla_classes.get(tenant.sla_class)
            if sla is None:
                raise ValueError(f"tenant {tenant.name!r}: sla_class {tenant.sla_class!r} is not defined")
            self._contexts[tenant.name] = TenantContext(
                name=tenant.name,
                sla_class=tenant.sla_class,
                priority=sla.priority,
                timeout_s=sla.timeout_ms / 1000.0,
                cost_center=tenant.cost_center,
                charge=tenant.charge,
            )
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    @property
    def tenants(self) -> list[TenantContext]:
        return list(self._contexts.values())

    def context(self, name: str) -> TenantContext:
        return self._contexts[name]

    def authenticate(self, headers: Mapping[str, str]) -> TenantContext:
        key = api_key_from_headers(headers)
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        digest = key_digest(key)
        found: str | None = None
        for stored, name in self._digests:
            if hmac.compare_digest(stored, digest):
                found = name
        if found is None:
            raise Unauthorized("unknown API key for this deployment")
        return self._contexts[found]

    def _request_bucket(self, tenant: TenantContext, now: float) -> TokenBucket:
        bucket = self._requests.get(tenant.name)
        if bucket is None:
            config = self._tenants[tenant.name]
            bucket = self._requests[tenant.name] = TokenBucket(config.rate_per_s, config.burst, now)
        return bucket

    def _limited(self, tenant: TenantContext, bucket: TokenBucket, wait: float) -> RateLimited:
        unit = tenant.charge
        return RateLimited(
            f"tenant {tenant.name!r} is over its rate of {bucket.rate_per_s:g} {unit}/s (burst {bucket.capacity:g})",
            retry_after=wait,
        )

    def admit_request(self, tenant: TenantContext, now: float) -> None:
        """Before the body is read. `requests`: take one unit or RateLimited with Retry-After. `rows` and
        `tokens`: refuse at once when the bucket is empty (the body would be read and tokenized for a
        certain 429); the real cost is taken by `admit_cost` once the request is parsed."""
        bucket = self._request_bucket(tenant, now)
        if tenant.charge == "requests":
            wait = bucket.try_take(1, now)
        else:
            available = bucket.available(now)
            wait = 0.0 if available >= 1 else (1 - available) / bucket.rate_per_s
        if wait:
            raise self._limited(tenant, bucket, wait)

    def admit_cost(self, tenant: TenantContext, rows: int, tokens: int, now: float) -> None:
        """Charge a parsed request: `rows` rows holding `tokens` tokens (nothing more for `requests`)."""
        if tenant.charge == "requests":
            return
        cost = rows if tenant.charge == "rows" else tokens
        bucket = self._request_bucket(tenant, now)
        if cost > bucket.capacity:
            raise BadRequest(
                f"request costs {cost} {tenant.charge}; tenant {tenant.name!r} may use at most {bucket.capacity:g} "
                f"at once (burst)",
                status=413,
            )
        wait = bucket.try_take(cost, now)
        if wait:
            raise self._limited(tenant, bucket, wait)

    def _token_bucket(self, tenant: TenantContext, now: float) -> TokenBucket | None:
        bucket = self._tokens.get(tenant.name)
        if bucket is None:
            per_minute = self._tenants[tenant.name].tokens_per_minute
            if per_minute is None:
                return None
            bucket = self._tokens[tenant.name] = TokenBucket(per_minute / 60.0, per_minute, now)
        return bucket

    def admit_tokens(self, tenant: TenantContext, estimate: int, now: float) -> None:
        """Reserve the estimated prompt tokens against tokens_per_minute (no budget: always admitted)."""
        bucket = self._token_bucket(tenant, now)
        if bucket is None:
            return
        if estimate > bucket.capacity:
            raise BadRequest(
                f"request needs about {estimate} tokens; tenant {tenant.name!r} may use at most "
                f"{bucket.capacity:g} tokens per minute",
                status=413,
            )
        wait = bucket.try_take(estimate, now)
        if wait:
            raise RateLimited(
                f"tenant {tenant.name!r} is over its {bucket.capacity:g} tokens per minute", retry_after=wait
            )

    def charge_tokens(self, tenant: TenantContext, tokens: int, now: float) -> None:
        """Charge tokens known only after the call (completion; prompt correction), possibly into debt."""
        bucket = self._token_bucket(tenant, now)
        if bucket is not None and tokens:
            bucket.charge(tokens, now)
