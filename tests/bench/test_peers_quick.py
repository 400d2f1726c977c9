"""``dose3d bench --quick --peers nvflare,flower`` end to end: central, this project's FedAvg, stock NVFlare and
(where ``.venv-flower`` exists) Flower on the same tiny sites, 2 rounds, one results file in which every
system has every field. Dice values are not asserted (2 rounds of 1 epoch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.peers import flower_python
from dose3d_fl.bench.systems import SYSTEM_FIELDS
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.seg.profiles import get_profile

# Four federated systems start and stop: minutes on a shared machine, beyond pytest's default 600 s limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# Fields every federated system (this project's and the peers') must have measured.
MEASURED = (
    "heldout_union_dice",
    "heldout_difference_from_central",
    "wall_seconds",
    "fixed_seconds_per_round",
    "fixed_seconds_per_round_all",
    "overhead_ratio",
    "whole_process_overhead_ratio",
    "sent_bytes_per_round",
    "received_bytes_per_round",
    "peak_rss_mib",
    "peak_total_rss_mib",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("peers")
    command = [sys.executable, "-m", "dose3d_fl.cli", "bench", "--quick", "--peers", "nvflare,flower"]
    command += ["--out", str(root / "results"), "--work", str(root / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((root / "results" / "peers_quick.json").read_text())
    data["_stdout"] = done.stdout
    data["_work"] = str(root / "work")
    return data


def test_every_system_has_every_field(results: dict) -> None:
    systems = results["systems"]
    expected = {"central", "fedavg", "peer-nvflare"} | ({"peer-flower"} if flower_python() else set())
    assert set(systems) == expected, results.get("failed_runs")
    for name, row in systems.items():
        assert tuple(row) == SYSTEM_FIELDS, name
        assert row["heldout_union_dice"] is not None and row["wall_seconds"] > 0 and row["peak_rss_mib"] > 0
    for name in expected - {"central"}:
        missing = [field for field in MEASURED if systems[name][field] is None]
        assert not missing, f"{name} did not measure {missing}"
        assert systems[name]["sent_bytes_per_round"] > 100_000  # the whole cpu-small model travels


def test_flower_is_run_or_skipped_with_its_reason(results: dict) -> None:
    if flower_python():
        assert "peer-flower" in results["systems"] and not results["skipped_peers"]
    else:
        assert "setup_venv.sh" in results["skipped_peers"]["peer-flower"]
        assert "Flower peer skipped" in results["_stdout"]


def test_the_peer_targets_and_the_table_are_reported(results: dict) -> None:
    targets = results["peer_targets"]
    assert targets["fixed_cost_over_stock_nvflare"]["measured"] is not None
    assert set(targets) == {
        "time_to_target_over_stock_nvflare",
        "time_to_target_over_flower",
        "fixed_cost_over_stock_nvflare",
        "whole_process_overhead_ratio",
    }
    assert "## Systems side by side" in results["_stdout"]


def test_the_peers_measure_dice_as_the_projects_evaluator_does(results: dict) -> None:
    """On the common initial model, a peer site's own validation (its time-to-Dice scale) gives the bench
    evaluator's Dice for that site."""
    work = Path(results["_work"])
    profile = get_profile(results["config"]["profile"])
    caches = sorted(next(work.glob("data-3-sites*")).glob("data/cache/site-*"))
    evaluator = Evaluator(load_site_cases(caches, seed=profile.seed), profile)
    initial = torch.load(work / "peers" / "initial.pt", weights_only=True)
    expected = evaluator.evaluate_weights(initial)["site_val_dice"]
    for peer in ("peer-nvflare", "peer-flower"):
        log = work / peer / "rounds.jsonl"
        if not log.is_file():  # Flower skipped
            continue
        first = {
            r["site"]: r["val_dice"] for r in map(json.loads, log.read_text().splitlines()) if r["round"] == 0
        }
        assert first == pytest.approx(expected, abs=1e-6), peer
