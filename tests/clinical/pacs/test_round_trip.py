"""The clinical loop through a real PACS: pull three patients from Orthanc and ingest them, segment the one
without delineation, send its RTSTRUCT back, and find it in Orthanc on the right CT.

The segmentation model has seeded random weights (as in ``benchmarks/segment_time.py``): this test checks
where the RTSTRUCT goes and what it references; ``tests/clinical/test_segment.py`` checks what a trained
model finds.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch
from pydicom import dcmread

from dose3d_fl.clinical.pacs.pull import staging_folder
from dose3d_fl.clinical.segment import RTSTRUCT_NAME
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.seg.checkpoint import SegCheckpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.synth.hospital import PHI_MARKER
from tests.clinical.pacs.conftest import Hospital, run_cli
from tests.clinical.pacs.orthanc import OrthancServer

pytestmark = pytest.mark.slow

FOLDERS = ("P001", "P002", "P003")  # P003 is on the PACS without an RTSTRUCT


def _sop_uids(folder: Path) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.rglob("*.dcm")}


def test_pull_ingest_segment_send_back(
    hospital: Hospital, pacs: OrthancServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [hospital.patient_id(folder) for folder in FOLDERS]
    into, cache = tmp_path / "input", tmp_path / "cache"
    with caplog.at_level(logging.DEBUG):
        status, stdout = run_cli(
            [
                "-v",
                "pull",
                "--node",
                str(pacs.node),
                "--patient",
                *ids,
                "--into",
                str(into),
                "--ingest-to",
                str(cache),
            ]
        )
    assert status == 0, stdout

    # One folder per study, each holding exactly the instances the hospital exported; no staging left.
    studies = {folder: hospital.study_uid(folder) for folder in FOLDERS}
    assert sorted(p.name for p in into.iterdir()) == sorted(studies.values())
    assert not staging_folder(into).exists()
    uploaded = {
        "P001": hospital.site / "P001",
        "P002": hospital.site / "P002",
        "P003": hospital.site / "P003" / "CT",
    }
    for folder, study in studies.items():
        assert _sop_uids(into / study) == _sop_uids(uploaded[folder])
    (no_rtstruct_line,) = [
        line for line in stdout.splitlines() if line.startswith(f"study {studies['P003']}")
    ]
    assert "no RTSTRUCT" in no_rtstruct_line and "pulled" in no_rtstruct_line

    # Ingestion: two labelled cases; P003's CT refused as unlabelled, with its reason.
    manifest = Manifest.load(cache)
    assert len(manifest.cases) == 2
    (rejection,) = manifest.rejected
    assert rejection.source.startswith(studies["P003"]) and "no RTSTRUCT references it" in rejection.reason

    # With -v every logger, pynetdicom's too, reaches the log at DEBUG: still no patient name in any record
    # or output line (patient IDs only where typed on the command line).
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert any(record.name.startswith("pynetdicom") for record in caplog.records)
    assert f"{PHI_MARKER}^" not in logged + stdout

    torch.manual_seed(0)
    profile = get_profile("cpu-small")
    model = save_checkpoint(
        tmp_path / "model.pt",
        SegCheckpoint(build_network(profile).state_dict(), profile, {"weights": "random"}),
    )
    segmented = tmp_path / "segment"
    status, stdout = run_cli(
        [
            "segment",
            "--model",
            str(model),
            "--dicom",
            str(into / studies["P003"]),
            "--out",
            str(segmented),
        ]
    )
    assert status == 0, stdout

    status, stdout = run_cli(["send", "--node", str(pacs.node), "--verify", str(segmented / RTSTRUCT_NAME)])
    assert status == 0, stdout
    assert stdout.splitlines()[0] == f"{segmented / RTSTRUCT_NAME}: stored"

    # Orthanc's own REST API: the study of P003 now holds an RTSTRUCT series that references P003's CT.
    (series_id,) = pacs.rest(
        "/tools/find",
        {"Level": "Series", "Query": {"StudyInstanceUID": studies["P003"], "Modality": "RTSTRUCT"}},
    )
    (instance_id,) = pacs.rest(f"/series/{series_id}")["Instances"]
    stored = dcmread(io.BytesIO(pacs.rest_bytes(f"/instances/{instance_id}/file")))
    ct = dcmread(hospital.ct_files("P003")[0], stop_before_pixels=True)
    assert stored.StudyInstanceUID == studies["P003"] and stored.PatientID == ids[2]
    (frame,) = stored.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == ct.FrameOfReferenceUID
    (referenced_series,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == hospital.ct_series_uid("P003")
    slices = {str(item.ReferencedSOPInstanceUID) for item in referenced_series.ContourImageSequence}
    assert slices == {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in hospital.ct_files("P003")
    }
    (contours,) = stored.ROIContourSequence
    assert len(contours.get("ContourSequence", [])) > 0  # the random model marks a large region
