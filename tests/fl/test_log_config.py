"""The simulator's logging configuration loads without torch (it is read before torch may load there)."""

from __future__ import annotations

import subprocess
import sys


def test_log_config_and_the_round_filter_import_without_torch() -> None:
    # The simulator process configures logging, which imports the round-line filter and through it the server
    # workflow module, before torch can be loaded: loading it there aborts the run (an oneMKL fatal error).
    code = (
        "import sys, dose3d_fl.fl.log_config, dose3d_fl.fl.server.controller;"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing the log configuration loaded {out.strip()}"
