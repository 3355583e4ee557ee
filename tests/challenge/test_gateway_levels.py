from __future__ import annotations

from challenge.gateway import LIGHT_LOAD_CONNECTIONS, GatewayLevel, connection_levels, refine_between


def _level(connections: int, meets: bool) -> GatewayLevel:
    return GatewayLevel.model_construct(
        connections=connections, client=None, mean_batch_size=None, failed_fraction=0.0, meets_sla=meets
    )


def test_refine_bisects_the_gap_above_the_busiest_level_that_meets_the_sla() -> None:
    levels = [_level(48, True), _level(908, False), _level(1815, False)]
    assert refine_between(levels) == 209  # sqrt(48 * 908)
    levels.append(_level(209, True))
    assert refine_between(levels) == 436  # sqrt(209 * 908)
    levels.append(_level(436, False))
    assert refine_between(levels) == 302  # sqrt(209 * 436)


def test_no_refinement_without_a_gap() -> None:
    assert refine_between([_level(48, False), _level(96, False)]) is None  # nothing meets the SLA
    assert refine_between([_level(48, True), _level(96, True)]) is None  # nothing above misses it
    assert refine_between([_level(48, True), _level(52, False)]) is None  # the gap is closed


def test_levels_count_requests_so_batched_clients_open_fewer_connections() -> None:
    factors = (0.25, 0.5, 1.0)
    # single texts: 8 per process, then Little's law: 100,000 req/s x 50 ms = 5,000 in flight
    assert connection_levels(100_000, 50.0, 1, 12, factors) == [LIGHT_LOAD_CONNECTIONS * 12, 1250, 2500, 5000]
    # 64 texts a request: 78 requests in flight at the SLA; the light level one connection per process
    assert connection_levels(100_000, 50.0, 64, 12, factors) == [12, 20, 39, 78]
    # never below one connection per process, never above 8192
    assert connection_levels(1_000, 50.0, 64, 12, factors) == [12]
    assert connection_levels(10_000_000, 50.0, 1, 12, factors)[-1] == 8192
