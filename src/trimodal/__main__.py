"""`python -m trimodal ...` is the `trimodal` command (torchrun needs a module to run)."""

import sys

from trimodal.cli import main

sys.exit(main())
