"""Differential privacy in NVFlare's simulator, for both transfer types: 2 sites x 2 rounds on tiny cases.

Each run measures, with a job filter after the site policy (``sent_updates.py``), the update every site
actually sends, and checks it against the mechanism: clipped to ``C`` (when the true update is longer) or kept
(when it is shorter), plus Gaussian noise of standard deviation ``2 sigma C`` per coordinate. The site's
ledger must hold one release per update sent.

* FULL transfer, with cross-site evaluation: ``C`` below the true update norm, so every release is clipped.
  site-2's ledger starts with a release of an earlier job, and the budget admits 2 releases: site-2 releases
  in round 1 and stops before round 2; round 2 aggregates site-1 alone and the job completes.
* DIFF transfer with float16 quantisation: ``C`` above the true update norm, so the update leaves unclipped;
  DP sees float32 and the float16 filter runs after it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.fl.policy.dp import PrivacyLedger, Release, noise_std
from dose3d_fl.fl.policy.privacy import JOB_TASKS, DPConfig
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig
from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
from tests.data.dicom_builders import SMALL, make_study
from tests.fl.policy.sent_updates import SENT_UPDATES_ENV, MeasureSentUpdate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
SITES = ("site-1", "site-2")
DELTA = 1e-5
# |noise| <= std * (sqrt(d) + T) except with probability exp(-T^2 / 2) (Gaussian concentration of the norm).
TAIL = 6.0


def _run(ws: Path, job: SegJobConfig, dp: DPConfig) -> tuple[dict, list[dict]]:
    for number, site in enumerate(SITES, 1):
        dicom, cache = ws / "data" / "dicom" / site, ws / "data" / "cache" / site
        for case in range(3):
            make_study(SMALL, seed=number * 100 + case).write(dicom / f"case{case}")
        ingest_site(dicom, cache)
    sent = ws / "sent_updates.jsonl"

    def measure(recipe) -> None:
        recipe.add_client_output_filter(MeasureSentUpdate(), tasks=list(JOB_TASKS))

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the simulated sites import tests.fl.policy.sent_updates
    monkeypatch.setenv(SENT_UPDATES_ENV, str(sent))
    try:
        summary = simulate_seg(SimulationConfig(workspace=ws, sites=len(SITES), job=job, dp=dp), measure)
    finally:
        monkeypatch.undo()
    return summary, [json.loads(line) for line in sent.read_text().splitlines()]


def _noise_bound(dp: DPConfig, coordinates: int) -> float:
    return noise_std(dp.clip_norm, dp.noise_multiplier) * (math.sqrt(coordinates) + TAIL)


def _transfer_log(ws: Path) -> list[dict]:
    log = ws / "sim" / JOB_NAME / "server" / "simulate_job" / "transfer_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _epsilon(releases: int, dp: DPConfig) -> float:
    ledger = PrivacyLedger(Path("/nonexistent"))
    std = noise_std(dp.clip_norm, dp.noise_multiplier)
    ledger.releases = [
        Release("j", r, dp.noise_multiplier, dp.clip_norm, 1.0, 0.0, std) for r in range(releases)
    ]
    return ledger.epsilon(dp.delta)


def test_full_transfer_clips_every_release_and_a_site_stops_before_its_budget(tmp_path: Path) -> None:
    ledgers = tmp_path / "ledgers"
    dp = DPConfig(
        clip_norm=0.01, noise_multiplier=1e-4, epsilon_budget=1.0, ledger=str(ledgers / "{site}.json")
    )
    dp = DPConfig(
        **{**dp.__dict__, "epsilon_budget": (_epsilon(2, dp) + _epsilon(3, dp)) / 2, "delta": DELTA}
    )
    earlier = PrivacyLedger(ledgers / "site-2.json")  # site-2 already released once, in an earlier job
    earlier.record(
        Release("earlier-job", 0, dp.noise_multiplier, dp.clip_norm, 0.5, 0.0, noise_std(0.01, 1e-4))
    )
    job = SegJobConfig(
        num_rounds=2, local_epochs=1, profile="cpu-small-dp", tensorboard=False, min_responses=1
    )

    summary, sent = _run(tmp_path, job, dp)

    # The halt: site-2 sent an error instead of its round-2 update; round 2 went on with site-1.
    assert summary["error_rounds"] == {"site-2": [2]}
    assert sorted((e["round"], e["site"], e["status"]) for e in _transfer_log(tmp_path)) == [
        (0, "site-1", "accepted"),
        (0, "site-2", "accepted"),
        (1, "site-1", "accepted"),
        (1, "site-2", "error"),
    ]
    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    final = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in final.values())
    assert set(summary["site_val_dice"]) == set(SITES)  # cross-site evaluation of the DP-released models

    # The ledger holds each release; site-2's never goes beyond its budget.
    site1, site2 = (PrivacyLedger(ledgers / f"{site}.json") for site in SITES)
    assert [r.round for r in site1.releases] == [0, 1]
    assert [(r.job_id, r.round) for r in site2.releases][1:] == [("simulate_job", 0)]
    assert site2.epsilon(DELTA) <= dp.epsilon_budget < _epsilon(3, dp)
    assert summary["dp_epsilon"]["site-1"] == pytest.approx(site1.epsilon(DELTA))

    # What each site sent: the update clipped to C, plus noise.
    updates = {(u["site"], u["round"]): u for u in sent if not u.get("error")}
    assert sorted(updates) == [("site-1", 0), ("site-1", 1), ("site-2", 0)]
    assert [u for u in sent if u.get("error")] and all(u["site"] == "site-2" for u in sent if u.get("error"))
    for release in [*site1.releases, site2.releases[1]]:
        site = "site-1" if release in site1.releases else "site-2"
        update = updates[(site, release.round)]
        assert update["kind"] == "WEIGHTS" and release.transfer == "full"
        assert release.update_norm > dp.clip_norm  # the true update was longer than C ...
        bound = _noise_bound(dp, update["coordinates"])
        assert bound < dp.clip_norm / 5
        assert abs(update["norm"] - dp.clip_norm) <= bound  # ... and left clipped to C, plus the noise
        assert update["filters"][:2] == ["WeightsOnlyGuard", "GaussianDP(C=0.01,sigma=0.0001)"]


def test_diff_transfer_sends_the_unclipped_difference_and_float16_after_dp(tmp_path: Path) -> None:
    dp = DPConfig(
        clip_norm=1000.0, noise_multiplier=1e-9, epsilon_budget=1e30, ledger=str(tmp_path / "{site}.json")
    )
    job = SegJobConfig(
        num_rounds=2,
        local_epochs=1,
        profile="cpu-small-dp",
        tensorboard=False,
        cross_site_evaluation=False,
        transfer="diff",
        quantization="float16",
    )

    summary, sent = _run(tmp_path, job, dp)

    assert summary["error_rounds"] == {} and summary["rejected_rounds"] == {}
    assert sorted((e["round"], e["status"]) for e in _transfer_log(tmp_path)) == [
        (0, "accepted"),
        (0, "accepted"),
        (1, "accepted"),
        (1, "accepted"),
    ]
    updates = {(u["site"], u["round"]): u for u in sent}
    assert sorted(updates) == [(s, r) for s in SITES for r in (0, 1)]
    for site in SITES:
        ledger = PrivacyLedger(tmp_path / f"{site}.json")
        assert [(r.round, r.transfer) for r in ledger.releases] == [(0, "diff"), (1, "diff")]
        for release in ledger.releases:
            update = updates[(site, release.round)]
            assert update["kind"] == "WEIGHT_DIFF" and update["dtypes"] == ["float16"]  # float16 after DP
            filters = update["filters"]
            assert len(filters) == len(set(filters)), filters  # each filter listed once
            assert filters.index("WeightsOnlyGuard") < filters.index("GaussianDP(C=1000,sigma=1e-09)")
            assert filters.index("GaussianDP(C=1000,sigma=1e-09)") < filters.index("Float16Quantizer")
            assert 0 < release.update_norm < dp.clip_norm  # shorter than C: not clipped ...
            bound = _noise_bound(dp, update["coordinates"])
            # ... so what left is the true update, plus the noise and float16 rounding (relative 2^-11).
            assert abs(update["norm"] - release.update_norm) <= bound + release.update_norm * 1e-3
