"""The benchmark of issue #8: ``python benchmarks/run.py [--quick]``, the same as ``dose3d bench``.

Writes ``benchmarks/results/<name>.json`` and ``.md``; see the README's "Performance" section.
"""

import sys

from dose3d_fl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
