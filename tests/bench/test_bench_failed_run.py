"""A federated run of the benchmark that fails costs only itself: the results name it, the rest is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.bench.config import BenchConfig
from dose3d_fl.bench.runner import run_benchmark

pytestmark = pytest.mark.slow


def test_a_failed_variant_is_named_and_the_other_runs_are_kept(tmp_path: Path) -> None:
    config = BenchConfig(
        name="broken",
        rounds=1,
        local_epochs=1,
        # The site script refuses an unknown transfer: the simulator run exits with an error.
        variants=(("broken-transfer", {"transfer": "sparse"}),),
        overhead_sites=(),
        patients=(2, 2, 2),
        local_only=False,  # the central run is the run that must be kept; local ones would add a minute
    )
    results = run_benchmark(config, tmp_path / "results", tmp_path / "work")

    assert set(results["failed_runs"]) == {"broken-transfer"}
    reason = results["failed_runs"]["broken-transfer"]
    assert "\n" not in reason and "broken-transfer" in reason and "failed" in reason
    assert set(results["union_val_dice"]) == {"central"}
    assert (
        json.loads((tmp_path / "results" / "broken.json").read_text())["failed_runs"]
        == results["failed_runs"]
    )
    report = (tmp_path / "results" / "broken.md").read_text()
    assert "## Failed runs" in report and "`broken-transfer`" in report
