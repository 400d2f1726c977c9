"""The peers' plumbing without running them: the task file, the figures read from their sites' logs, a missing
Flower environment, the systems table's fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dose3d_fl.bench.measure import Measured
from dose3d_fl.bench.peers import (
    PEERS_DIR,
    parse_peers,
    peer_figures,
    peer_plan,
    write_task_spec,
)
from dose3d_fl.bench.systems import SYSTEM_FIELDS, peer_targets, system_row
from dose3d_fl.data.cases import LABEL_VALUES, SiteCases
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile


def test_unknown_peers_are_refused_by_name() -> None:
    assert parse_peers("nvflare, flower") == ("nvflare", "flower")
    assert parse_peers(None) == ()
    with pytest.raises(ValueError, match="unknown peer 'pysyft'; choose from nvflare, flower"):
        parse_peers("nvflare,pysyft")


def test_flower_without_its_environment_is_skipped_with_the_way_to_make_it(tmp_path: Path) -> None:
    plan = peer_plan("flower", tmp_path / "spec.json", tmp_path / "out", venv=tmp_path / "no-venv")
    assert plan.command is None and "setup_venv.sh" in plan.skipped
    nvflare = peer_plan("nvflare", tmp_path / "spec.json", tmp_path / "out")
    assert nvflare.command[1] == str(PEERS_DIR / "nvflare" / "run.py")


def test_outside_a_checkout_the_peers_are_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed wheel run outside the repository has no benchmarks/peers/ to run."""
    monkeypatch.setattr("dose3d_fl.bench.peers.PEERS_DIR", tmp_path / "benchmarks" / "peers")
    plan = peer_plan("nvflare", tmp_path / "spec.json", tmp_path / "out")
    assert plan.command is None and "run dose3d bench from a checkout of dose3d-fl" in plan.skipped


def test_the_task_file_carries_the_split_the_network_and_the_projects_initial_weights(tmp_path: Path) -> None:
    profile = get_profile("cpu-small")
    case = {"image": "/c/img.nii.gz", "label": "/c/lab.nii.gz", "id": "P001"}
    sites = [SiteCases("site-1", tmp_path, [case], [case])]
    spec = json.loads(write_task_spec(tmp_path, sites, profile, 3, 2, 0).read_text())
    paths = {"image": "/c/img.nii.gz", "label": "/c/lab.nii.gz"}
    assert spec["sites"]["site-1"] == {"train": [paths], "val": [paths]}
    assert (spec["rounds"], spec["local_epochs"], spec["profile"]["lr"]) == (3, 2, profile.lr)
    initial = torch.load(spec["initial_model"], weights_only=True)
    expected = build_network(profile).state_dict()
    assert all(torch.equal(initial[k], expected[k]) for k in expected)
    remapped = [SiteCases("site-1", tmp_path, [case | {LABEL_VALUES: [0, 1]}], [])]
    with pytest.raises(ValueError, match="one-organ task only"):
        write_task_spec(tmp_path, remapped, profile, 3, 2, 0)


def _log(out: Path, records: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(site: str, round_: int, received: float, sent: float, dice: float) -> dict:
    return {
        "site": site,
        "round": round_,
        "received_at": received,
        "sent_at": sent,
        "val_dice": dice,
        "val_cases": 2,
        "val_seconds": 1.0,
        "train_seconds": 4.0,
        "sent_bytes": 600,
        "received_bytes": 700,
    }


def test_peer_figures_follow_the_benchmarks_definitions(tmp_path: Path) -> None:
    """Round r ends when its last result leaves; fixed cost = round wall - slowest compute; a model's Dice is
    measured at the start of the next round, the final one by the evaluator."""
    _log(
        tmp_path,
        [
            _record("site-1", 0, 110.0, 116.0, 0.1),
            _record("site-2", 0, 111.0, 117.0, 0.1),
            _record("site-1", 1, 119.0, 125.0, 0.95),
            _record("site-2", 1, 119.5, 125.5, 0.93),
        ],
    )
    measured = Measured(wall_seconds=40.0, returncode=0, started_at=100.0)
    figures = peer_figures(tmp_path, measured, final_dice=0.96, target=0.90)
    assert figures["first_round_wall_seconds"] == 17.0  # from the process start to round 1's last result
    assert figures["steady_fixed_seconds_per_round"] == pytest.approx(8.5 - 5.0)
    assert figures["seconds_to_target"] == 17.0  # round 1's model scored 0.94 in round 2
    assert figures["sent_bytes_per_round"] == 600 and figures["received_bytes_per_round"] == 700
    assert figures["whole_process_overhead_ratio"] == pytest.approx(40.0 / 10.0)
    with pytest.raises(ValueError, match="logged no round"):
        peer_figures(tmp_path / "empty", measured, 0.5, 0.9)


def test_every_system_row_has_every_field_and_targets_say_when_not_measured() -> None:
    peer = {
        "kind": "peer",
        "wall_seconds": 40.0,
        "peak_rss_mib": {"main": 300.0, "site worker": 800.0},
        "peak_total_rss_mib": 2000.0,
        "seconds_to_target": None,
        "peer": {"steady_fixed_seconds_per_round": 2.5, "sent_bytes_per_round": 600.0},
    }
    central = {"kind": "central", "wall_seconds": 30.0, "peak_rss_mib": {"main": 700.0}}
    for run in (peer, central):
        row = system_row(run, 0.9, {"union_dice": 0.91, "difference_from_central": None})
        assert tuple(row) == SYSTEM_FIELDS
    assert system_row(peer, 0.9, None)["peak_rss_mib"] == 800.0
    targets = peer_targets(
        {"fedavg": {"fixed_seconds_per_round": 0.4}, "peer-nvflare": {"fixed_seconds_per_round": 2.5}}
    )
    assert targets["fixed_cost_over_stock_nvflare"] == {"measured": 0.16, "limit": 0.2, "met": True}
    assert targets["time_to_target_over_flower"]["met"] is None  # not measured: no Flower run
