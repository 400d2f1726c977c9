"""``python -m dose3d_fl.cli``: the ``dose3d`` command (all commands), as the benchmark runner calls it."""

import sys

from dose3d_fl.cli import main

if __name__ == "__main__":
    sys.exit(main())
