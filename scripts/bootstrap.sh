#!/usr/bin/env bash
# Make a working environment from nothing: .venv in the repository, torch first
# (CPU build 2.13.0 where there is no CUDA; an installed torch is kept), then this
# package in editable mode with its dev and netcdf extras. Re-running it is quick and idempotent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="$root/.venv"

if [ ! -x "$venv/bin/python" ]; then
    echo "[bootstrap] creating $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[bootstrap] CUDA found: installing torch (CUDA build)"
        "${pip[@]}" install "torch>=2.11,<2.15"
    else
        echo "[bootstrap] no CUDA: installing torch==2.13.0 (CPU build)"
        "${pip[@]}" install "torch==2.13.0"
    fi
fi

stamp="$venv/.nestor-ds-stamp"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$venv/bin/python" -c "import nestor_ds" >/dev/null 2>&1; then
    echo "[bootstrap] installing nestor-ds[dev,netcdf] (editable)"
    "${pip[@]}" install -e ".[dev,netcdf]" 2> >(grep -v "is ignored: it is neither" >&2)
    echo "$want" > "$stamp"
fi
echo "[bootstrap] ready: $("$venv/bin/python" -c 'import torch, deepspeed; print("torch", torch.__version__, "| deepspeed", deepspeed.__version__)' 2>/dev/null)"
