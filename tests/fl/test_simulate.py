"""The seg_fedavg job end to end in NVFlare's simulator: 2 sites x 2 rounds on tiny real DICOM-derived cases."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.fl import simulate
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig
from dose3d_fl.fl.server.transfer_log import LOG_NAME, TransferLog, verify_chain, verify_site
from dose3d_fl.fl.simulate import (
    SimulationConfig,
    format_simulation_summary,
    simulate_seg,
)
from tests.data.dicom_builders import SMALL, make_study

pytestmark = pytest.mark.slow


def _tiny_site(dicom: Path, cache: Path, seed: int, cases: int = 4) -> None:
    for case in range(cases):
        make_study(SMALL, seed=seed * 100 + case).write(dicom / f"case{case}")
    ingest_site(dicom, cache)


def _rechain(log: Path, records: list[dict]) -> None:
    """Rewrite the log and chain it anew, as whoever holds the server could."""
    log.unlink()
    chain = TransferLog(log)
    for record in records:
        chain.append({k: v for k, v in record.items() if k not in ("prev", "hash", "countersignature")})


def test_simulator_job_trains_validates_and_cross_evaluates(tmp_path: Path) -> None:
    for site in (1, 2):
        _tiny_site(
            tmp_path / "data" / "dicom" / f"site-{site}", tmp_path / "data" / "cache" / f"site-{site}", site
        )

    summary = simulate_seg(
        SimulationConfig(
            workspace=tmp_path, sites=2, job=SegJobConfig(num_rounds=2, local_epochs=6, tensorboard=False)
        )
    )

    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    weights = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    assert any(key.endswith("weight") for key in weights)
    assert (server / "app_server" / "best_FL_global_model.pt").is_file()
    cross = json.loads((server / "cross_site_val" / "cross_val_results.json").read_text())
    assert set(cross) == {"site-1", "site-2"}
    assert all(len(models) >= 3 for models in cross.values())  # both site models + the global model(s)

    assert len(summary["round_val_dice"]) == 2
    assert set(summary["site_val_dice"]) == {"site-1", "site-2"}
    first_line = (server / "metrics" / "round_metrics.jsonl").read_text().splitlines()[0]
    initial = json.loads(first_line)
    initial_dice = initial["aggregated_metrics"][0]["value"]
    assert summary["final_val_dice"] > initial_dice + 0.1, (initial_dice, summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    # Every update is receipted and signed by its site; the log verifies against each site's key and head,
    # and a rewritten decision or a cut-off end does not (dose3d_fl.fl.policy.receipts).
    log = server / LOG_NAME
    server_key = (server / "transfer_log.server_key.pem").read_text()
    assert verify_chain(log, server_key).ok
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["receipt_check"] for r in records} == {"ok"} and len(records) == 4
    for site in ("site-1", "site-2"):
        receipts = tmp_path / "data" / "cache" / site / "fl_state" / "receipts"
        check = verify_site(
            log, site, (receipts / "public_key.pem").read_text(), (receipts / "head").read_text()
        )
        assert check.ok, check
    receipts = tmp_path / "data" / "cache" / "site-1" / "fl_state" / "receipts"
    site_key, head = (receipts / "public_key.pem").read_text(), (receipts / "head").read_text()
    forged = [dict(r, status="rejected") if (r["site"], r["round"]) == ("site-1", 0) else r for r in records]
    _rechain(log, forged)
    assert verify_chain(log).ok and not verify_site(log, "site-1", site_key, head).ok
    _rechain(log, [r for r in records if (r["site"], r["round"]) != ("site-1", 1)])
    assert verify_chain(log).ok and not verify_site(log, "site-1", site_key, head).ok

    # One concise line per round at the server (dose3d_fl.fl.server.controller), in its log.
    server_log = (tmp_path / "sim" / JOB_NAME / "server" / "log.txt").read_text()
    assert re.findall(r" - rounds - INFO - (round \d+/\d+): 2 site\(s\), Dice", server_log) == [
        "round 1/2",
        "round 2/2",
    ]


@pytest.mark.parametrize("norm", ["fedbn", "silobn"])
def test_diff_transfer_with_site_norm_every_update_accepted_and_each_site_keeps_its_norm(
    tmp_path: Path, norm: str
) -> None:
    """DIFF transfer (each site sends its difference from the global model) with FedBN (each site keeps its
    BatchNorm) or SiloBN (only its statistics). A falling running variance makes a negative difference: the
    server must accept it. Each site's own model is written for the report and ``dose3d segment``."""
    for site in (1, 2):
        _tiny_site(
            tmp_path / "data" / "dicom" / f"site-{site}", tmp_path / "data" / "cache" / f"site-{site}", site
        )
    job = SegJobConfig(
        num_rounds=2,
        local_epochs=3,
        tensorboard=False,
        cross_site_evaluation=False,
        min_clients=2,
        transfer="diff",
        fedbn=norm == "fedbn",
        silobn=norm == "silobn",
    )
    summary = simulate_seg(SimulationConfig(workspace=tmp_path, sites=2, job=job))

    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    decisions = [json.loads(line) for line in (server / "transfer_log.jsonl").read_text().splitlines()]
    assert [(d["round"], d["status"]) for d in decisions] == [(r, "accepted") for r in (0, 0, 1, 1)]
    global_weights = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    states = [
        torch.load(path, weights_only=False)
        for path in sorted((tmp_path / "data" / "cache").glob("site-*/fl_state/*.round1.pt"))
    ]
    assert len(states) == 2
    means = [k for k in global_weights if k.endswith("running_mean")]
    scales = [k for k in global_weights if k.endswith(".adn.N.weight")]
    assert means and scales
    # Each site keeps its own statistics: the two sites' differ.
    assert any(not torch.equal(states[0]["model"][k], states[1]["model"][k]) for k in means)
    own = set(states[0]["site_keys"])
    assert set(means) <= own and (set(scales) <= own) == (norm == "fedbn")
    # The sites' own models: the global weights with exactly what each site kept.
    assert summary["site_norm"] == ("layers" if norm == "fedbn" else "statistics")
    assert sorted(Path(p).name for p in summary["site_models"].values()) == ["site-1.pt", "site-2.pt"]
    assert f"each site's own model (dose3d segment --model, dose3d report): {tmp_path}" in (
        format_simulation_summary(summary)
    )
    for state, site in zip(states, ("site-1", "site-2"), strict=True):
        model = torch.load(tmp_path / "site_models" / f"{site}.pt", weights_only=False)["model"]
        for key, value in model.items():
            expected = state["model"][key] if key in own else global_weights[key]
            assert torch.equal(value, expected), (site, key)


def test_the_summary_does_not_depend_on_the_order_the_sites_answered_in(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sites = [
        {
            "name": f"site-{i}",
            "metrics": [
                {"name": "val_dice", "value": float(rng.uniform(0.5, 0.9))},
                {"name": "val_cases", "value": int(rng.integers(1, 9))},
            ],
        }
        for i in range(1, 6)
    ]
    rounds = set()
    for n, order in enumerate(itertools.permutations(sites)):
        job = tmp_path / str(n)
        (job / "metrics").mkdir(parents=True)
        records = [{"round": r, "sites": list(order)} for r in (0, 1)]
        (job / "metrics" / "round_metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        rounds.add(tuple(simulate.summarise_simulation(job, 3)["round_val_dice"]))
    assert len(rounds) == 1
