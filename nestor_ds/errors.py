"""The two kinds of error a command answers without a traceback (no torch import, so the CLI catches them cheaply).

- :class:`UserError`: the input is at fault (a config, a data file, a checkpoint, an unsafe file). The message
  names the file, field or value; the command prints it on one line and exits 2.
- :class:`RunStopped`: a run stopped itself for a reason it names (non-finite steps, a collective timeout).
  One line, exit 1.

Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input that cannot work, with the reason and the file, field or value at fault."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, incomplete, damaged or does not fit the model."""


class RunStopped(RuntimeError):
    """A run that stopped itself for a reason it names."""
