"""Which RTSTRUCT labels a CT series: approval and origin first, recency last (issue #23).

The model's own output is the real RTSTRUCT ``dose3d segment`` writes (``build_predicted_structure_set``);
the physicians' structure sets are the project's writer output marked as a planning system writes them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from dose3d_fl.cli import main
from dose3d_fl.clinical.models import ModelRecord
from dose3d_fl.clinical.structure_export import PredictedOrgan, build_predicted_structure_set
from dose3d_fl.data.contours import polygons_from_field
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from dose3d_fl.data.structure_choice import StructureSetOption, StructureSetOrigin, choose_structure_set
from tests.data.dicom_builders import (
    SMALL,
    Study,
    accepted_sources,
    as_physician_delineation,
    ingest_manifest,
    load_case,
    make_study,
    organ_field,
    rejection_for,
    series_uid,
)

CENTRAL = (5, 6, 7)


def _structure_set(
    study: Study, slices: tuple[int, ...], created: dt.datetime, body: bool = False
) -> FileDataset:
    """A structure set on ``study`` holding the organ on ``slices`` only (and a BODY outline if asked)."""
    field = organ_field(SMALL.voxel_points())
    rois = [
        RoiContours(
            "SPLEEN", (255, 0, 0), "ORGAN", {k: polygons_from_field(field[:, :, k].T) for k in slices}
        )
    ]
    if body:
        cols, rows, n = SMALL.shape
        outline = np.array([[0.5, 0.5], [0.5, cols - 1.5], [rows - 1.5, cols - 1.5], [rows - 1.5, 0.5]])
        rois.append(RoiContours("BODY", (0, 255, 0), "EXTERNAL", {k: [outline] for k in range(n)}))
    return build_rtstruct(
        study.ct[0],
        [str(ds.SOPInstanceUID) for ds in study.ct],
        SMALL,
        rois,
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        created=created,
    )


def _labelled_slices(cache: Path, manifest: Manifest) -> set[int]:
    (case,) = manifest.cases
    _, label, _ = load_case(cache, case)
    return set(np.flatnonzero(label.any(axis=(0, 1))).tolist())


def _physician_and_model(tmp_path: Path) -> tuple[Study, Path]:
    """A physician's structure set (2024) and, newer, the one ``dose3d segment`` wrote for the same CT."""
    study = make_study(SMALL)
    study.write(tmp_path / "in" / "CT", rtstruct_name="RS-physician.dcm")
    series = load_input_series(tmp_path / "in" / "CT")
    predicted = np.zeros(SMALL.shape, dtype=bool)
    predicted[:, :, list(CENTRAL)] = study.truth[:, :, list(CENTRAL)]  # the model found a different organ
    model = build_predicted_structure_set(
        series,
        [PredictedOrgan("SPLEEN", (255, 128, 0), predicted)],
        ModelRecord(path=tmp_path / "model.pt", sha256="ab" * 32, profile="cpu-small"),
        created=dt.datetime(2025, 6, 1),
    )
    model.save_as(tmp_path / "in" / "RS-dose3d.dcm", enforce_file_format=True)
    return study, tmp_path / "in"


@pytest.mark.parametrize("allow", [False, True], ids=["default", "automatic-allowed"])
def test_model_output_beside_the_physicians_never_wins(tmp_path: Path, allow: bool) -> None:
    study, folder = _physician_and_model(tmp_path)
    manifest = ingest_manifest(folder, tmp_path / "cache", allow_automatic_labels=allow)

    assert accepted_sources(manifest) == ["CT/RS-physician.dcm"]
    assert not manifest.rejected
    (case,) = manifest.cases
    assert case.structure_set_choice.startswith("no ApprovalStatus, a person's delineation, created 20240101")
    assert (
        f"preferred over 1 other structure set(s) of series {series_uid(study)}" in case.structure_set_choice
    )
    (model,) = case.set_aside
    assert model.source == "RS-dose3d.dcm"
    for marker in (
        "Manufacturer 'dose3d-fl'",
        "StructureSetLabel 'DOSE3D AUTO'",
        "ROIGenerationAlgorithm AUTOMATIC",
    ):
        assert marker in model.reason
    if allow:
        assert "the person's delineation CT/RS-physician.dcm is used" in model.reason
    else:
        assert "not ground truth" in model.reason and "--allow-automatic-labels" in model.reason
    assert _labelled_slices(tmp_path / "cache", manifest) == set(np.flatnonzero(study.truth.any(axis=(0, 1))))
    assert Manifest.load(tmp_path / "cache").cases[0].set_aside == case.set_aside


def test_model_output_alone_is_refused_unless_the_site_allows_it(tmp_path: Path) -> None:
    _, folder = _physician_and_model(tmp_path)
    (folder / "CT" / "RS-physician.dcm").unlink()

    refused = ingest_manifest(folder, tmp_path / "cache")
    assert not refused.cases and not refused.allow_automatic_labels
    reason = rejection_for(refused, "RS-dose3d.dcm").reason
    assert (
        reason.startswith("automatic contours (Manufacturer 'dose3d-fl'")
        and "--allow-automatic-labels" in reason
    )

    allowed = ingest_manifest(folder, tmp_path / "cache", allow_automatic_labels=True)
    assert accepted_sources(allowed) == ["RS-dose3d.dcm"] and allowed.allow_automatic_labels
    assert "automatic labels allowed by the site" in allowed.cases[0].structure_set_choice
    assert "UNAPPROVED, automatic (" in allowed.cases[0].structure_set_choice
    assert _labelled_slices(tmp_path / "cache", allowed) == set(CENTRAL)
    assert not any(r.source == "RS-dose3d.dcm" for r in allowed.rejected)


def test_approved_wins_over_newer_unapproved_and_rejected(tmp_path: Path) -> None:
    study = make_study(SMALL)
    as_physician_delineation(study.rtstruct, approval="APPROVED")
    study.write(tmp_path / "in", rtstruct_name="RS-approved.dcm")
    for name, approval, created in (
        ("RS-draft.dcm", "UNAPPROVED", dt.datetime(2025, 1, 1)),
        ("RS-rejected.dcm", "REJECTED", dt.datetime(2026, 1, 1)),
    ):
        ds = as_physician_delineation(_structure_set(study, CENTRAL, created), approval=approval)
        ds.save_as(tmp_path / "in" / name, enforce_file_format=True)

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["RS-approved.dcm"]
    assert not manifest.rejected
    (case,) = manifest.cases
    assert case.structure_set_choice.startswith("APPROVED, a person's delineation")
    assert "preferred over 2 other structure set(s)" in case.structure_set_choice
    reasons = {other.source: other.reason for other in case.set_aside}
    assert reasons["RS-draft.dcm"].startswith("UNAPPROVED: RS-approved.dcm (APPROVED) is used for series")
    assert reasons["RS-rejected.dcm"] == "ApprovalStatus REJECTED: a clinician rejected this structure set"
    assert len(_labelled_slices(tmp_path / "cache", manifest)) > len(CENTRAL)


def test_a_rejected_structure_set_alone_labels_nothing(tmp_path: Path) -> None:
    study = make_study(SMALL)
    as_physician_delineation(study.rtstruct, approval="REJECTED")
    study.write(tmp_path / "in" / "case")
    make_study(SMALL, seed=99).write(tmp_path / "in" / "good")
    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    assert "ApprovalStatus REJECTED" in rejection_for(manifest, "case/RS.dcm").reason


@pytest.mark.parametrize(
    ("marked", "used"),
    [("SPLEEN", False), ("BODY", True)],
    ids=["label-roi-automatic", "only-body-automatic"],
)
def test_only_the_label_rois_generation_algorithm_counts(tmp_path: Path, marked: str, used: bool) -> None:
    study = make_study(SMALL)
    ds = as_physician_delineation(
        _structure_set(study, tuple(range(2, 10)), dt.datetime(2024, 5, 1), body=True)
    )
    for roi in ds.StructureSetROISequence:
        if roi.ROIName == marked:  # a planning system's atlas contour, e.g. its automatic BODY outline
            roi.ROIGenerationAlgorithm = "AUTOMATIC"
    study.rtstruct = ds
    study.write(tmp_path / "in")
    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert bool(manifest.cases) == used
    if not used:
        assert "ROI 'SPLEEN' ROIGenerationAlgorithm AUTOMATIC" in rejection_for(manifest, "RS.dcm").reason


def test_interpreted_type_automatic_marks_the_roi() -> None:
    ds = as_physician_delineation(_structure_set(make_study(SMALL), CENTRAL, dt.datetime(2024, 5, 1)))
    ds.RTROIObservationsSequence[0].RTROIInterpretedType = "AUTOMATIC"
    origin = StructureSetOrigin.of(ds, ["spleen"])
    assert origin.automatic == "ROI 'SPLEEN' RTROIInterpretedType AUTOMATIC"
    choice = choose_structure_set([StructureSetOption("RS.dcm", origin, None)], "1.2.3")
    assert choice.chosen is None and "RTROIInterpretedType AUTOMATIC" in choice.set_aside[0][1]


def test_cli_allow_automatic_labels_and_set_aside_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, folder = _physician_and_model(tmp_path)
    assert main(["ingest", "--input", str(folder), "--out", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "set aside RS-dose3d.dcm: automatic contours" in out
    (folder / "CT" / "RS-physician.dcm").unlink()
    assert main(["ingest", "--input", str(folder), "--out", str(tmp_path / "cache")]) == 2
    capsys.readouterr()
    args = ["ingest", "--input", str(folder), "--out", str(tmp_path / "cache"), "--allow-automatic-labels"]
    assert main(args) == 0
    assert Manifest.load(tmp_path / "cache").allow_automatic_labels
