"""What leaves a site, end to end in NVFlare's simulator: 3 sites x 2 rounds on tiny real DICOM-derived cases.

One run checks both ends of the wire. At the sites: every result passes the weights-only guard and is
recorded by the payload audit (tensors of the model only, bytes close to the model size, no DICOM
identifier in any byte sent). At the server: a NaN update (site-2) and a x100-scaled update (site-3) in
round 2 are rejected, the round aggregates site-1 alone, the job completes with a finite model, and the
hash-chained transfer log holds every decision. No identifier appears in the server's workspace or any log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import torch

from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig
from dose3d_fl.fl.server.transfer_log import LOG_NAME, verify_chain
from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
from dose3d_fl.synth.hospital import PHI_MARKER
from tests.data.dicom_builders import SMALL, make_study
from tests.fl.poison import PoisonUpdate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
IDENTIFYING = ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID")


def _identifiers(dicom: Path) -> set[bytes]:
    found = {PHI_MARKER.encode()}
    for path in dicom.rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            found |= {str(ds.get(key, "")).encode() for key in IDENTIFYING if str(ds.get(key, ""))}
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("site_policy")
    for site in (1, 2, 3):
        dicom, cache = ws / "data" / "dicom" / f"site-{site}", ws / "data" / "cache" / f"site-{site}"
        for case in range(3):
            make_study(SMALL, seed=site * 100 + case).write(dicom / f"case{case}")
        ingest_site(dicom, cache)

    def poison(recipe) -> None:
        from dose3d_fl.fl.policy.privacy import JOB_TASKS

        for site, mode in (("site-2", "nan"), ("site-3", "scale")):
            recipe.add_client_output_filter(PoisonUpdate(site, mode, rounds=[1]), tasks=list(JOB_TASKS))

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the simulated sites import tests.fl.poison
    try:
        summary = simulate_seg(
            SimulationConfig(
                workspace=ws,
                sites=3,
                job=SegJobConfig(num_rounds=2, local_epochs=2, tensorboard=False, min_responses=1),
                keep_payloads=True,
            ),
            customize=poison,
        )
    finally:
        monkeypatch.undo()
    return ws, summary


def _server(ws: Path) -> Path:
    return ws / "sim" / JOB_NAME / "server" / "simulate_job"


def test_poisoned_updates_are_rejected_and_the_job_completes(run) -> None:
    ws, summary = run
    assert summary["rejected_rounds"] == {"site-2": [2], "site-3": [2]}
    weights = torch.load(_server(ws) / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    entries = [json.loads(line) for line in (_server(ws) / LOG_NAME).read_text().splitlines()]
    decisions = {(e["round"], e["site"]): e for e in entries}
    assert "NaN or Inf" in decisions[(1, "site-2")]["reason"]
    assert "median of the other sites" in decisions[(1, "site-3")]["reason"]
    assert decisions[(1, "site-1")]["status"] == "accepted"
    assert all(decisions[(0, s)]["status"] == "accepted" for s in ("site-1", "site-2", "site-3"))
    assert all(
        e["filters"] == ["WeightsOnlyGuard", "SiteReceipts"] for e in entries
    )  # every site ran its policy
    # Each site signed what its policy released; the poison (a job filter after the site's policy) changed
    # the tensors afterwards, and the server's receipt check says so.
    poisoned = {(1, "site-2"), (1, "site-3")}
    assert all(e["receipt_check"] == "ok" for e in entries if (e["round"], e["site"]) not in poisoned)
    assert all(decisions[key]["receipt_check"].startswith("the tensors received differ") for key in poisoned)
    assert verify_chain(_server(ws) / LOG_NAME).ok


def test_only_model_tensors_of_about_the_model_size_leave_each_site(run) -> None:
    ws, _ = run
    weights = torch.load(_server(ws) / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    model_bytes = sum(v.numel() * v.element_size() for v in weights.values())
    for site in ("site-1", "site-2", "site-3"):
        records = [json.loads(line) for line in (ws / "sim" / JOB_NAME / site / "payload_audit.jsonl").open()]
        assert {r["task"] for r in records} == {"train", "validate", "submit_model"}
        for record in records:
            assert set(record["tensors"]) <= set(weights)
            assert all(tuple(t["shape"]) == tuple(weights[n].shape) for n, t in record["tensors"].items())
            assert record["other_keys"] == [] and all(
                isinstance(v, (int, float)) for v in record["metrics"].values()
            )
            if record["task"] in ("train", "submit_model"):
                assert record["tensor_bytes"] == model_bytes
                assert 1.0 <= record["serialized_bytes"] / model_bytes < 1.1
            else:
                assert record["serialized_bytes"] < 2048  # a validation result is a few scalars


def test_no_dicom_identifier_in_what_was_sent_the_server_workspace_or_any_log(run) -> None:
    ws, _ = run
    identifiers = _identifiers(ws / "data" / "dicom")
    assert len(identifiers) > 5
    sim = ws / "sim" / JOB_NAME
    scanned = [p for p in (sim / "server").rglob("*") if p.is_file()]
    for site in ("site-1", "site-2", "site-3"):
        scanned += [
            p for p in (sim / site).rglob("*") if p.is_file() and ("log" in p.name or "payload" in str(p))
        ]
    assert any("payloads" in str(p) for p in scanned) and any(p.name == "log.txt" for p in scanned)
    for path in scanned:
        data = path.read_bytes()
        leaked = [i.decode() for i in identifiers if i in data]
        assert not leaked, f"{path} contains {leaked}"
    assert (
        sum(p.suffix == ".fobs" for p in scanned) >= 3 * 5
    )  # 2 train + 1 submit_model + 2+ validate per site


def test_the_run_report_a_site_may_share_carries_no_dicom_identifier(run, tmp_path: Path) -> None:
    from dose3d_fl.report.build import ReportConfig, build_report

    ws, _ = run
    report = build_report(ReportConfig(run=ws, out=tmp_path / "report"))
    identifiers = _identifiers(ws / "data" / "dicom")
    files = [p for p in report.parent.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not [i.decode() for i in identifiers if i in data], path
