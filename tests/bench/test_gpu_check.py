"""benchmarks/gpu_check.sh on a machine without CUDA: one line that says why, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.server.transfer_log import LOG_NAME
from dose3d_fl.fl.simulate import server_job_dir, simulation_dir

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


def test_too_few_patients_are_refused_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SCRIPT), "--device", "cpu", "--patients", "1", "--out", str(tmp_path / "gpu.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "gpu_check: --patients 1: a site needs at least 2 (training and validation)"
    )
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
def test_the_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    """The whole script with a CPU profile: speed figures, then two FedAvg rounds of two sites with their
    per-round figures. Round 1 of these two sites is where one norm over all tensors rejected an honest site
    (BatchNorm running variances 10x apart) and the job stopped; no update may be rejected now."""
    out, work = tmp_path / "gpu.json", tmp_path / "work"
    speed = ["--device", "cpu", "--profile", "cpu-small", "--steps", "2", "--warmup", "1", "--patients", "3"]
    result = subprocess.run(
        [str(SCRIPT), *speed, "--fl-rounds", "2", "--out", str(out), "--work", str(work)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["train"]["device"] == "cpu" and figures["train"]["steps_per_second"] > 0
    assert "compare" not in figures  # the comparisons are for CUDA
    rounds = figures["fl"]["per_round"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["wall_seconds"] >= r["slowest_site_compute_seconds"] > 0 for r in rounds)
    log = server_job_dir(simulation_dir(work)) / LOG_NAME
    statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert statuses.count("accepted") == 4 and "rejected" not in statuses
