"""launch/train.py with one fault injected: on rank 1 the gradient of one dense parameter turns NaN in the
backward passes listed in NAN_GRAD_STEPS, while the loss stays finite. Everything else is the real run."""

from __future__ import annotations

import os
import sys

import nestor_ds.model as model_pkg
from nestor_ds.cli import train_main

BAD = {int(s) for s in os.environ["NAN_GRAD_STEPS"].split(",")}
_build = model_pkg.build_model


def build_model(*args, **kwargs):
    model = _build(*args, **kwargs)
    calls = [0]

    def poison(grad):
        calls[0] += 1
        return grad * float("nan") if calls[0] - 1 in BAD and os.environ.get("RANK") == "1" else grad

    next(model.parameters()).register_hook(poison)
    return model


model_pkg.build_model = build_model
sys.exit(train_main(sys.argv[1:]))
