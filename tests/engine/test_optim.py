"""The one-cycle schedule resized mid-run (train.fit_steps_to_time) continues as a fresh one of that length."""

from __future__ import annotations

import pytest
import torch

from nestor_ds.engine.optim import one_cycle, resize_one_cycle


def _lrs(steps: int, upto: int, resize_at: int | None = None, new: int = 0) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2e-3)
    sched, out = one_cycle(opt, steps, 0.1), []
    for k in range(upto):
        if k == resize_at:
            resize_one_cycle(sched, new, 0.1, k)
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_resized_schedule_matches_a_fresh_one_from_the_resize_on() -> None:
    resized, fresh = _lrs(10**9, 300, resize_at=20, new=300), _lrs(300, 300)
    assert resized[:20] == pytest.approx(_lrs(10**9, 20))  # before: the long schedule's (still warming up)
    assert resized[20:] == pytest.approx(fresh[20:], rel=1e-9)
    assert max(resized) == pytest.approx(2e-3, rel=1e-3) and resized[-1] < 1e-6  # peaked, then annealed
