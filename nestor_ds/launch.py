"""The training entry of an installed package: ``python -m nestor_ds.launch`` or ``deepspeed --module
nestor_ds.launch`` (the same as ``launch/train.py`` in a checkout)."""

import sys

from nestor_ds.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
