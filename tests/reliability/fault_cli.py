"""Test-only `trimodal` entry point that dies by SIGKILL at a chosen point.

    TRIMODAL_TEST_KILL_AT='trimodal.jobs.runner:_atomic_write@3@after' python fault_cli.py tokenize text ...

Without the variable it is the plain CLI (so torchrun can launch it too).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_helpers import FAULT_ENV, FAULT_RANK_ENV, KillPoint, install  # noqa: E402

from trimodal.cli import main  # noqa: E402

if __name__ == "__main__":
    armed = os.environ.get(FAULT_RANK_ENV) in (None, os.environ.get("RANK", "0"))
    if os.environ.get(FAULT_ENV) and armed:
        install(KillPoint.decode(os.environ[FAULT_ENV]))
    sys.exit(main(sys.argv[1:]))
