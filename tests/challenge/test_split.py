from __future__ import annotations

import numpy as np

from challenge.split import plan_groups, row_lengths


def test_cheap_replays_split_every_bucket() -> None:
    # cost = padded tokens only: every bucket on its own is cheapest
    groups = plan_groups([(16, 100), (32, 10), (64, 1)], lambda rows, bucket: rows * bucket)
    assert groups == [(16, 100), (32, 10), (64, 1)]


def test_a_fixed_cost_per_replay_merges_small_groups_into_their_neighbour() -> None:
    # 1000 token-equivalents per replay: the few long rows (32, 48, 64 buckets) run as one sub-batch
    def cost(rows: int, bucket: int) -> float:
        return 1000 + rows * bucket

    groups = plan_groups([(16, 200), (32, 3), (48, 1), (64, 2)], cost)
    assert groups == [(16, 200), (64, 6)]
    assert sum(rows for _, rows in groups) == 206


def test_empty_buckets_are_ignored() -> None:
    assert plan_groups([(16, 0), (32, 0)], lambda rows, bucket: rows * bucket) == []
    assert plan_groups([(16, 0), (32, 5)], lambda rows, bucket: rows * bucket) == [(32, 5)]


def test_row_lengths_reads_the_last_attended_position() -> None:
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    assert row_lengths(mask).tolist() == [2, 4, 1, 3]
