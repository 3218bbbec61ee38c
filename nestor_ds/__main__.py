"""``python -m nestor_ds``: the ``nestor-ds`` command."""

import sys

from nestor_ds.cli import main

sys.exit(main())
