"""What expert parallelism costs, on real gloo ranks: the experts compute the real routes and nothing more.

For the same global batch, forward+backward FLOPs summed over ranks stay within 1.05x of ep 1 (NESTOR at ep 1,
2, 3; MoE-POT at ep 1, 2, 4), the experts run at most 1.05 samples per real route, and the all-to-all bytes the
ranks handed to gloo equal the scale model's prediction from the step's route counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from multiproc import REPO

from nestor_ds.config import load_config
from nestor_ds.model.ep_benchmark import EP_CASES, bench_shape, measure_eps
from nestor_ds.studies.scale_model import alltoall_bytes_of_routes, model_facts

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]


@pytest.mark.parametrize(("variant", "config", "batch"), [("nestor", "nestor_tiny", 12), ("moepot", "moepot_ti", 8)])
def test_dropless_expert_parallelism_computes_the_routes_only(
    tmp_path: Path, variant: str, config: str, batch: int
) -> None:
    cfg = bench_shape(load_config(REPO / "configs" / f"{config}.yaml").model, width=64)
    runs = measure_eps(cfg, EP_CASES[variant], batch, tmp_path)
    base = runs[0]
    assert base.ep == 1 and base.bytes_out == 0 and base.rows_per_route == 1.0
    facts = model_facts(cfg, config)
    for m in runs[1:]:
        assert m.flops <= 1.05 * base.flops, (m.ep, m.flops / base.flops)
        assert m.rows_per_route <= 1.05, (m.ep, m.rows_per_route)
        predicted = alltoall_bytes_of_routes(m.counts(), facts, element_bytes=4)
        assert m.bytes_out == pytest.approx(predicted, rel=0.01), m.ep
        assert m.bytes_out > 0
