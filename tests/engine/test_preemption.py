"""Signals become a collective stop; only the time-limit warning asks for a requeue."""

from __future__ import annotations

import torch


def test_preemption_requeues_only_on_the_time_limit_warning() -> None:
    import os
    import signal

    from nestor_ds.engine.preemption import Preemption

    p = Preemption()
    assert not p.agreed(torch.device("cpu"))
    os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag, does not end the process
    assert p.agreed(torch.device("cpu")) and not p.wants_requeue
    os.kill(os.getpid(), signal.SIGUSR1)
    assert p.agreed(torch.device("cpu")) and p.wants_requeue
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
