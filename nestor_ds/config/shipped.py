"""The configurations shipped with the project (``configs/``, ``ds_configs/``, ``studies/``), found from any
directory: in a checkout (or an editable install) at the repository's top level, in an installed wheel as
package data under ``nestor_ds/_shipped/`` (``pyproject.toml`` maps the top-level folders there)."""

from __future__ import annotations

import shutil
from pathlib import Path

FOLDERS = ("configs", "ds_configs", "studies")


def _shipped_root() -> Path:
    """The folder holding configs/, ds_configs/ and studies/: the wheel's package data, else the checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_shipped"
    return installed if (installed / "configs").is_dir() else package.parent


SHIPPED_ROOT = _shipped_root()


def resolve_shipped(path: str | Path) -> Path:
    """``path`` as given when it exists; else, for a relative ``configs/...`` or ``ds_configs/...``, the shipped
    file, so that README commands work from any working directory."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    candidate = SHIPPED_ROOT / p
    return candidate if p.parts and p.parts[0] in FOLDERS and candidate.exists() else p


def copy_shipped(dest: str | Path) -> list[Path]:
    """``nestor-ds init DIR``: copies of the shipped configs to edit; existing files are never overwritten."""
    dest = Path(dest)
    written = []
    for folder in FOLDERS:
        for src in sorted((SHIPPED_ROOT / folder).glob("*")):
            target = dest / folder / src.name
            if src.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
                written.append(target)
    return written
