#!/usr/bin/env bash
# The static checks CI runs before the tests: lint and import order, formatting, types, docstrings.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
echo "[check] ruff check";         "$py" -m ruff check .
echo "[check] ruff format --check"; "$py" -m ruff format --check .
echo "[check] mypy nestor_ds";      "$py" -m mypy
echo "[check] docstrings";          "$py" scripts/check_docstrings.py
