"""Loading ``.pt`` files without running code that came with them.

Every torch file the project reads (DeepSpeed checkpoints included, through
:class:`WeightsOnlyCheckpointEngine`) goes through :func:`torch_load`: tensors,
plain containers and numbers only (``weights_only=True``), plus DeepSpeed's loss
scaler, a plain record its ZeRO optimizer files hold. A file that asks for any
other global (the way a pickle payload runs code) is refused, naming the file
and the global.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from nestor_ds.errors import CheckpointError, UserError


class UnsafeCheckpoint(UserError):
    """A checkpoint file that could only be loaded by unpickling arbitrary objects."""


def _allowed_globals() -> list[Any]:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler

    return [LossScaler, DynamicLossScaler]


def torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; refusals and damaged files raise naming ``path``."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"the global {found.group(1)}" if found else "an object that is not a tensor or plain container"
        raise UnsafeCheckpoint(
            f"{path}: refused to load: it asks to unpickle {what}, which could run code. nestor-ds loads "
            f"weights only (tensors, numbers, plain containers); a file it wrote never needs more"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: damaged or truncated torch file ({str(err).splitlines()[0]})") from None


def weights_only_checkpoint_engine(config: Any) -> Any:
    """DeepSpeed's torch checkpoint engine with its ``load`` (which unpickles anything) replaced by
    :func:`torch_load`; installed on every engine before a checkpoint is read."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import (
        TorchCheckpointEngine,
    )

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            return torch_load(path, map_location)

    return WeightsOnlyCheckpointEngine(config)
