"""Where a run came from: code version, package versions, machine. Logged as MLflow tags."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(world_size: int, ep_size: int, device: str) -> dict[str, str]:
    """Tags: git commit (and whether the tree had uncommitted changes), versions, world/ep size, device."""
    tags = {
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "world_size": str(world_size),
        "ep_size": str(ep_size),
        "device": device,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags["git_dirty"] = "unknown" if status is None else str(bool(status)).lower()
    for package in ("nestor-ds", "torch", "deepspeed", "mlflow", "webdataset"):
        try:
            tags[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            tags[f"version.{package}"] = "not installed"
    return tags
