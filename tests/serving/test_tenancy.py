"""Token buckets on an explicit clock, API-key authentication, per-tenant rate and token limits."""

from __future__ import annotations

import pytest

from serving.buckets import TokenBucket
from serving.errors import BadRequest, RateLimited, Unauthorized
from serving.tenancy import Tenancy, api_key_from_headers
from tests.serving.gateway_kit import KEYS, SLA, tenant


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, capacity=3, now=0.0)
    assert [bucket.try_take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take(1, 0.0) == pytest.approx(0.1)
    assert bucket.try_take(1, 0.1) == 0.0
    bucket.charge(5, 0.1)  # usage known afterwards may go into debt
    assert bucket.available(0.1) == pytest.approx(-5)
    assert bucket.available(10.0) == 3  # refill is capped at capacity


def test_api_key_from_bearer_or_x_api_key_and_sha256_lookup() -> None:
    assert api_key_from_headers({"authorization": "Bearer abc"}) == "abc"
    assert api_key_from_headers({"x-api-key": "xyz"}) == "xyz"
    assert api_key_from_headers({"authorization": "Basic abc"}) is None
    tenancy = Tenancy([tenant("acme", "premium"), tenant("initech", "batch")], SLA)
    acme = tenancy.authenticate({"authorization": f"Bearer {KEYS['acme']}"})
    assert (acme.name, acme.sla_class, acme.priority, acme.timeout_s) == ("acme", "premium", 0, 1.0)
    with pytest.raises(Unauthorized):
        tenancy.authenticate({"x-api-key": KEYS["globex"]})  # a key of a tenant not on this deployment
    with pytest.raises(Unauthorized):
        tenancy.authenticate({})


def test_rate_limit_is_per_tenant_with_retry_after() -> None:
    tenancy = Tenancy(
        [tenant("acme", "premium", rate=2, burst=2, charge="requests"), tenant("initech", "batch", rate=2, burst=2)],
        SLA,
    )
    acme, initech = tenancy.context("acme"), tenancy.context("initech")
    tenancy.admit_request(acme, 0.0)
    tenancy.admit_request(acme, 0.0)
    with pytest.raises(RateLimited) as limited:
        tenancy.admit_request(acme, 0.0)
    assert limited.value.retry_after == pytest.approx(0.5)
    tenancy.admit_request(initech, 0.0)  # another tenant's bucket is untouched
    tenancy.admit_request(acme, 0.5)


def test_tokens_per_minute_budget_admits_estimates_and_charges_usage() -> None:
    tenancy = Tenancy([tenant("acme", "premium", tpm=600)], SLA)
    acme = tenancy.context("acme")
    tenancy.admit_tokens(acme, 100, 0.0)
    tenancy.charge_tokens(acme, 450, 0.0)  # completion tokens from upstream usage: 50 left
    with pytest.raises(RateLimited) as limited:
        tenancy.admit_tokens(acme, 100, 0.0)
    assert limited.value.retry_after == pytest.approx(5.0)  # 50 missing tokens at 10 tokens/s
    with pytest.raises(BadRequest):
        tenancy.admit_tokens(acme, 601, 10.0)  # can never fit the budget: 413, not an endless 429


def test_rows_and_tokens_charging_take_the_request_cost_and_refuse_an_empty_bucket_before_the_body() -> None:
    tenancy = Tenancy(
        [
            tenant("acme", "premium", rate=1, burst=16, charge="requests"),
            tenant("globex", "standard", rate=4, burst=16, charge="rows"),
            tenant("initech", "batch", rate=100, burst=300, charge="tokens"),
        ],
        SLA,
    )
    acme, globex, initech = (tenancy.context(name) for name in ("acme", "globex", "initech"))
    tenancy.admit_request(acme, 0.0)
    tenancy.admit_cost(acme, 16, 900, 0.0)  # requests: a 16-row request cost the one unit already taken
    tenancy.admit_request(globex, 0.0)  # rows: only checks that a unit is there
    tenancy.admit_cost(globex, 12, 100, 0.0)  # 12 of 16 rows
    with pytest.raises(RateLimited) as limited:
        tenancy.admit_cost(globex, 8, 100, 0.0)  # 4 rows left, 8 asked: 4 missing at 4 rows/s
    assert limited.value.retry_after == pytest.approx(1.0)
    tenancy.admit_cost(globex, 4, 100, 0.0)
    with pytest.raises(RateLimited):
        tenancy.admit_request(globex, 0.0)  # empty: refused before its body is read
    with pytest.raises(BadRequest) as too_big:
        tenancy.admit_cost(globex, 17, 17, 10.0)  # more than the burst can ever hold: 413, not an endless 429
    assert too_big.value.status == 413
    tenancy.admit_cost(initech, 2, 250, 0.0)  # tokens: 250 of 300
    with pytest.raises(RateLimited) as short:
        tenancy.admit_cost(initech, 1, 100, 0.0)
    assert short.value.retry_after == pytest.approx(0.5)  # 50 tokens missing at 100/s
