"""benchmarks/gan_augment.py end to end on a tiny setting: data, GAN, sampling at the smallest site, every
segmentation arm at the same step budget, held-out scores, comparisons and targets in the JSON (the Dice
values of so small a run are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gan_augment.py"


def test_the_augmentation_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "gan_augment.json"
    args = [
        "--work", str(tmp_path / "work"), "--out", str(out), "--patients", "2,2,2", "--heldout-patients", "1",
        "--gan", "local", "--gan-profile", "cpu-tiny", "--gan-local-epochs", "1", "--pool", "4", "--repeat", "1",
        "--seeds", "1", "--steps", "3", "--threads", "1",
    ]  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(out.read_text())
    assert results["command"].startswith("python benchmarks/gan_augment.py")
    assert set(results["arms"]) == {"real", "real+gan", "real+classical", "real+classical+gan", "gan-only"}
    assert all(run["steps"] == 3 for arm in results["arms"].values() for run in arm["runs"].values())
    assert results["arms"]["real+gan"]["runs"]["0"]["synthetic_cases"] >= 1
    assert {"real+gan - real", "real+classical - real", "real+classical+gan - real+classical"} <= set(
        results["comparisons"]
    )
    assert {"gan_gain", "tstr_ratio", "label_check"} <= set(results["targets"])
    assert results["targets"]["label_check"]["met"] and results["quality"]["label_check_pass"] == 1.0
    assert set(results["quality"]["tissue_agreement"]) == {"fat", "muscle", "organ", "bone"}
    assert len(results["case_dice"]["real"]["0"]) == 3  # one held-out patient per scanner
