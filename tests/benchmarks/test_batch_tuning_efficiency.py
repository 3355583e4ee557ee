"""The batch-tuning benchmark's SLA choice: the cell that sets the SLA must meet it."""

from __future__ import annotations

from benchmarks.batch_tuning_efficiency import sla_at_quantile


def test_the_cell_at_the_quantile_meets_the_sla_it_sets() -> None:
    p99s = [26.382, 5.14, 41.316, 12.0]
    sla = sla_at_quantile(p99s, 0.5)
    assert sla == 26.39  # rounded up, never below the cell that set it
    assert sum(value <= sla for value in p99s) == 3


def test_exact_values_are_not_rounded_up_past_themselves() -> None:
    assert sla_at_quantile([10.0, 20.0, 30.0], 0.0) == 10.0
    assert sla_at_quantile([10.0, 20.0, 30.0], 1.0) == 30.0
    assert sla_at_quantile([26.38, 1.0], 0.5) == 26.38  # 26.38 * 100 is 2638.0000000000005 in floats
