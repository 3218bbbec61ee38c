"""The scale model's arithmetic: balanced routing agrees with the per-route byte count, links follow the layout."""

from __future__ import annotations

import pytest

from nestor_ds.studies.scale_model import (
    COUNT_BYTES,
    Cluster,
    ModelFacts,
    alltoall_bytes_of_routes,
    best_ep,
    ep_within_node,
    predict_step,
)

FACTS = ModelFacts("t", 1e10, 1_000_000, 12_000_000, 2, 6, 2, 256, 512, 512)


def test_balanced_prediction_equals_the_bytes_of_evenly_spread_routes() -> None:
    cluster = Cluster(nvlink_gbs=100.0)
    batch, ep = 12, 2  # 12 samples x top-2 over 6 experts: 4 routes per expert from each rank
    counts = [[[batch * FACTS.top_k // FACTS.experts] * FACTS.experts for _ in range(ep)] for _ in range(2)]
    total = alltoall_bytes_of_routes(counts, FACTS, element_bytes=2)  # summed over the ep ranks
    per_gpu = predict_step(FACTS, 8, ep, batch, 1, cluster).alltoall_s * 100e9
    assert per_gpu == pytest.approx(total / ep)
    remote_routes = 2 * ep * 3 * 4  # layers x ranks x remote experts x routes each
    assert total == remote_routes * FACTS.route_bytes(2) + 2 * ep * 3 * COUNT_BYTES


def test_links_states_and_the_pick() -> None:
    cluster = Cluster()
    assert ep_within_node(2, cluster) and not ep_within_node(3, cluster) and not ep_within_node(16, cluster)
    one, two = predict_step(FACTS, 64, 1, 32, 1, cluster), predict_step(FACTS, 64, 2, 32, 1, cluster)
    assert one.alltoall_s == 0 and two.alltoall_s > 0
    assert two.grad_s < one.grad_s and two.states_gib < one.states_gib  # what EP buys: expert grads and states
    zero2 = predict_step(FACTS, 64, 2, 32, 2, cluster)
    assert zero2.states_gib < two.states_gib  # ZeRO 2 also splits the gradients
    assert best_ep(FACTS, 64, 32, 1, cluster).ep == 2
    tight = Cluster(gpu_mem_gib=0.01)  # nothing fits: the smallest states
    assert best_ep(FACTS, 48, 32, 1, tight).ep == 6
