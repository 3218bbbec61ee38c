import sys

from nestor_ds.cli import main

sys.exit(main())
