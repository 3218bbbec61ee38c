"""DeepSpeed checkpoints that become ``latest`` only once completely written, keeping the newest K.

Client state carries what DeepSpeed does not: the step, the loader position, RNG
states and the run config, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, cast

import numpy as np
import torch
import torch.distributed as dist

from nestor_ds.atomic import write_text_atomic
from nestor_ds.engine.checkpoint_integrity import problems, write_manifest
from nestor_ds.engine.distributed import gather
from nestor_ds.errors import CheckpointError
from nestor_ds.integrity import read_folder_manifest
from nestor_ds.safe_load import weights_only_checkpoint_engine

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain values: loadable with ``weights_only=True``."""
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the torch, numpy and Python generators saved with a checkpoint (exact resume)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


TAG = re.compile(r"step(\d{8})")


def tag_for(step: int) -> str:
    """The checkpoint tag of ``step`` (zero-padded, so tags sort by step)."""
    return f"step{step:08d}"


def prunable(root: Path, current: str, keep: int) -> list[str]:
    """Tags to delete after writing ``current``: only this run's own (``stepNNNNNNNN`` folders of earlier
    steps; a folder of a later step belongs to another run in a reused directory, any other name to the user),
    never ``current`` nor what ``latest`` names, keeping the newest ``keep`` including ``current``."""
    match = TAG.fullmatch(current)
    if match is None:
        raise ValueError(f"{current!r} is not a checkpoint tag of this run (stepNNNNNNNN)")
    step = int(match.group(1))
    protected = {current, latest_tag(root)}
    numbered = sorted(
        (int(m.group(1)), p.name)
        for p in root.iterdir()
        if p.is_dir() and (m := TAG.fullmatch(p.name)) and int(m.group(1)) < step
    )
    own = [name for _, name in numbered]
    kept_older = max(keep - 1, 0)
    old = own[:-kept_older] if kept_older else own
    return [tag for tag in old if tag not in protected]


def latest_tag(root: Path) -> str | None:
    """The tag DeepSpeed's ``latest`` file names, or None when there is none."""
    latest = root / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def _write_failure(folder: Path, err: BaseException | None, rank: int) -> str:
    """Why writing ``folder`` failed, naming a full disk as such (torch reports it as an 'iostream error')."""
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free if probe.exists() else -1
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or 0 <= free < (1 << 20)
    cause = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}" if err else "another rank failed"
    return f"writing checkpoint {folder} failed on rank {rank} ({cause})" + (
        f"; no space left on device ({free} bytes free on {probe})" if full else ""
    )


def _agreed_failure(err: BaseException | None) -> list[str]:
    """Collective: the failure messages of all ranks (empty: every rank succeeded)."""
    return gather([] if err is None else [repr(err)])


def save(engine: Any, root: Path, step: int, client_state: dict[str, Any], keep: int) -> str:
    """Collective: every rank writes its part, the ranks hash it into the tag's manifest, and only then does
    rank 0 point ``latest`` at it and prune old ones. A failed write (a full disk) on any rank removes the
    partial tag, leaves ``latest`` on the previous whole checkpoint and stops the run naming the folder."""
    from nestor_ds.errors import RunStopped

    tag = tag_for(step)
    folder, rank = root / tag, dist.get_rank()
    err: BaseException | None = None
    try:
        engine.save_checkpoint(str(root), tag=tag, client_state={**client_state, "rng": rng_state()}, save_latest=False)
    except (OSError, RuntimeError) as e:
        err = e
    if not _agreed_failure(err):
        try:
            write_manifest(folder, step, client_state["config"])
        except OSError as e:
            err = e
    failures = _agreed_failure(err)
    if failures:
        message = _write_failure(folder, err, rank)
        if rank == 0 and tag != latest_tag(root):
            shutil.rmtree(folder, ignore_errors=True)  # never mistaken for a whole one, and its space comes back
        dist.barrier()
        raise RunStopped(
            f"{message}. The previous checkpoint ({latest_tag(root) or 'none'}) is intact and 'latest' still names it"
        )
    dist.barrier()
    if rank == 0:
        write_text_atomic(root / "latest", tag)  # only now is the checkpoint visible as complete
        for old in prunable(root, tag, keep):
            shutil.rmtree(root / old, ignore_errors=True)
    dist.barrier()
    return tag


def resume_candidates(root: Path) -> list[str]:
    """``latest`` first, then this run's older tags, newest first: where a damaged ``latest`` falls back to."""
    tag = latest_tag(root)
    if tag is None:
        return []
    match = TAG.fullmatch(tag)
    step = int(match.group(1)) if match else 1 << 62
    older = sorted(
        (p.name for p in root.iterdir() if p.is_dir() and (m := TAG.fullmatch(p.name)) and int(m.group(1)) < step),
        reverse=True,
    )
    return [tag, *older]


def intact_tag(root: Path) -> str | None:
    """Collective: the newest tag whose files all match their manifest (None: nothing to resume). A damaged
    tag is renamed ``<tag>.damaged`` (kept for inspection, never used again) and ``latest`` moved to the
    one used; with no intact tag left the run stops naming every fault."""
    from nestor_ds.errors import RunStopped

    faults: list[str] = []
    for tag in resume_candidates(root):
        found = problems(root / tag)
        if not found:
            if faults and dist.get_rank() == 0:
                write_text_atomic(root / "latest", tag)
            return tag
        faults += found
        log.warning("checkpoint %s is damaged, not used: %s", root / tag, "; ".join(found))
        dist.barrier()
        if dist.get_rank() == 0:
            (root / tag).rename(root / f"{tag}.damaged")
    if faults:
        raise RunStopped(
            f"no intact checkpoint left in {root} to resume from: {'; '.join(faults)}. Damaged tags "
            f"were renamed *.damaged; start afresh with --no-resume or another train.output_dir"
        )
    return None


def load(engine: Any, root: Path, check_config: Callable[[dict[str, Any], str], None]) -> dict[str, Any] | None:
    """Collective: resume from the newest intact tag (None: fresh start); returns the client state.

    ``check_config(saved_config, where)`` runs before anything is loaded. Nothing is unpickled beyond
    tensors and plain containers (nestor_ds.safe_load). The lr schedule is not loaded: the caller continues
    the current config's (nestor_ds.engine.resume)."""
    tag = intact_tag(root)
    if tag is None:
        return None
    check_config(read_folder_manifest(root / tag)["config"], str(root / tag))
    engine.checkpoint_engine = weights_only_checkpoint_engine(engine._config)
    path, client = engine.load_checkpoint(str(root), tag=tag, load_lr_scheduler_states=False)
    if path is None:
        raise CheckpointError(f"{root}/{tag}: DeepSpeed could not load this checkpoint")
    set_rng_state(client["rng"])
    return {**client, "tag": tag}
