"""benchmarks/gpu_check.sh on a machine without CUDA: one line that says why, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_without_cuda_the_check_refuses_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SCRIPT), "--out", str(tmp_path / "gpu.json"), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "gpu.json").exists() and not (tmp_path / "work").exists()
