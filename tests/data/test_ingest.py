"""Site ingestion end to end: pairing CT with RTSTRUCT, rejections, non-DICOM files, the CLI and the cache.

Series-level rules (geometry, pixels, transfer syntaxes) are in test_ct_series.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dose3d_fl.cli import main
from dose3d_fl.data.contours import polygons_from_field
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.ingest import IngestConfig, ingest_site
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from tests.data.dicom_builders import (
    SMALL,
    Study,
    accepted_sources,
    as_physician_delineation,
    dice,
    ingest_manifest,
    load_case,
    make_study,
    organ_field,
    rejection_for,
    series_uid,
    write_with_good_case,
)

# --- pairing rules: which RTSTRUCT labels which CT ------------------------------------------------------


def _no_rtstruct(study: Study) -> None:
    study.rtstruct = None


def _rtstruct_only(study: Study) -> None:
    study.ct = []


def _other_frame_of_reference(study: Study) -> None:
    other = generate_uid()
    study.rtstruct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = other
    for roi in study.rtstruct.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = other


def _contours_between_slices(study: Study) -> None:
    for contour in study.rtstruct.ROIContourSequence[0].ContourSequence:
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        points[:, 2] += SMALL.spacing[2] / 2
        contour.ContourData = [f"{v:.3f}" for v in points.ravel()]


def _point_contours_only(study: Study) -> None:
    for contour in study.rtstruct.ROIContourSequence[0].ContourSequence:
        contour.ContourGeometricType = "POINT"


def _unparsable_rtstruct(study: Study) -> None:
    del study.rtstruct.ROIContourSequence[0].ReferencedROINumber


@pytest.mark.parametrize(
    ("edit", "roi_name", "source", "fragments"),
    [
        pytest.param(
            _no_rtstruct,
            "SPLEEN",
            "case",
            ["{series}", "(12 files)", "no RTSTRUCT references it"],
            id="ct-without-rtstruct",
        ),
        pytest.param(
            _rtstruct_only,
            "SPLEEN",
            "case/RS.dcm",
            ["{series}", "not in the input"],
            id="rtstruct-of-absent-series",
        ),
        pytest.param(
            _other_frame_of_reference,
            "SPLEEN",
            "case/RS.dcm",
            ["{series}", "{frame}", "frame of reference"],
            id="frame-of-reference-mismatch",
        ),
        pytest.param(None, "BODY", "case/RS.dcm", ["ROI 'SPLEEN' absent", "(ROIs: BODY)"], id="roi-absent"),
        pytest.param(
            _point_contours_only,
            "SPLEEN",
            "case/RS.dcm",
            ["'SPLEEN'", "no CLOSED_PLANAR contours"],
            id="point-contours-only",
        ),
        pytest.param(
            _contours_between_slices,
            "SPLEEN",
            "case/RS.dcm",
            ["{series}", "none of its", "lies on a slice"],
            id="contours-between-slices",
        ),
        pytest.param(
            _unparsable_rtstruct,
            "SPLEEN",
            "case/RS.dcm",
            ["RTSTRUCT cannot be parsed"],
            id="unparsable-rtstruct",
        ),
    ],
)
def test_pairing_rejections_name_the_object_and_the_problem(
    tmp_path: Path, edit: Callable[[Study], None] | None, roi_name: str, source: str, fragments: list[str]
) -> None:
    study = make_study(SMALL, roi_name=roi_name)
    values = {"series": series_uid(study), "frame": str(study.ct[0].FrameOfReferenceUID)}
    if edit is not None:
        edit(study)
    manifest = ingest_manifest(write_with_good_case(tmp_path / "in", study), tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    reason = rejection_for(manifest, source).reason
    for fragment in fragments:
        assert fragment.format(**values) in reason


def test_unparsable_rtstruct_leaves_its_ct_unlabelled(tmp_path: Path) -> None:
    study = make_study(SMALL)
    _unparsable_rtstruct(study)
    manifest = ingest_manifest(write_with_good_case(tmp_path / "in", study), tmp_path / "cache")
    assert "no RTSTRUCT references it" in rejection_for(manifest, "case").reason


@pytest.mark.parametrize("wanted", ["spleen", " Spleen ", "SPLEEN"])
def test_roi_name_matches_ignoring_case_and_spaces(tmp_path: Path, wanted: str) -> None:
    make_study(SMALL).write(tmp_path / "in")
    report = ingest_site(tmp_path / "in", tmp_path / "cache", IngestConfig(roi=wanted))
    assert [case.roi for case in report.manifest.cases] == ["SPLEEN"]


def test_rtstruct_referencing_only_sop_instances_finds_its_series(tmp_path: Path) -> None:
    study = make_study(SMALL)
    del study.rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence
    manifest = ingest_manifest(write_with_good_case(tmp_path / "in", study), tmp_path / "cache")
    assert accepted_sources(manifest) == ["case/RS.dcm", "good/RS.dcm"]
    assert not manifest.rejected


def test_newest_of_two_equal_rtstructs_labels_the_series_and_the_older_is_set_aside(tmp_path: Path) -> None:
    study = make_study(SMALL)
    uids = [str(ds.SOPInstanceUID) for ds in study.ct]
    field = organ_field(SMALL.voxel_points())
    # The newer structure set holds the organ on its three central slices only: a different label.
    central = {k: polygons_from_field(field[:, :, k].T) for k in (5, 6, 7)}
    newer = build_rtstruct(
        study.ct[0],
        uids,
        SMALL,
        [RoiContours("SPLEEN", (255, 0, 0), "ORGAN", central)],
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
        created=dt.datetime(2025, 6, 1, 8, 0, 0),
    )
    study.write(tmp_path / "in")
    as_physician_delineation(newer).save_as(tmp_path / "in" / "RS-new.dcm", enforce_file_format=True)

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["RS-new.dcm"]
    assert not manifest.rejected
    (case,) = manifest.cases
    (older,) = case.set_aside
    assert older.source == "RS.dcm"
    assert "superseded by the newer RS-new.dcm" in older.reason and series_uid(study) in older.reason
    assert "preferred over 1 other structure set(s)" in case.structure_set_choice
    _, label, _ = load_case(tmp_path / "cache", case)
    assert set(np.flatnonzero(label.any(axis=(0, 1)))) == {5, 6, 7}


# --- several series in one folder ----------------------------------------------------------------------


def _shifted(geometry: VolumeGeometry, offset: tuple[float, float, float]) -> VolumeGeometry:
    """The same grid moved in the patient: the organ lands on other voxels."""
    return dataclasses.replace(geometry, origin=tuple(float(v) for v in np.add(geometry.origin, offset)))


def test_two_series_in_one_folder_each_get_their_own_label(tmp_path: Path) -> None:
    first = make_study(SMALL, seed=1)
    second = make_study(_shifted(SMALL, (-18.0, 14.0, 16.0)), seed=2)
    folder = tmp_path / "in" / "mixed"
    first.write(folder, ct_names="a-{k:03d}.dcm", rtstruct_name="RS-a.dcm")
    second.write(folder, ct_names="b-{k:03d}.dcm", rtstruct_name="RS-b.dcm")

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["mixed/RS-a.dcm", "mixed/RS-b.dcm"]
    assert not manifest.rejected
    labels = {}
    for case in manifest.cases:
        _, label, _ = load_case(tmp_path / "cache", case)
        labels[case.structure_set] = label
    assert not np.array_equal(first.truth, second.truth)
    assert dice(labels["mixed/RS-a.dcm"], first.truth) >= 0.97
    assert dice(labels["mixed/RS-b.dcm"], second.truth) >= 0.97
    assert dice(labels["mixed/RS-a.dcm"], second.truth) < 0.9


@pytest.mark.parametrize("shared_frame", [False, True], ids=["own-frames", "shared-frame-of-reference"])
def test_rtstruct_decides_which_ct_it_labels(tmp_path: Path, shared_frame: bool) -> None:
    unlabelled = make_study(SMALL, seed=1)
    labelled = make_study(_shifted(SMALL, (-18.0, 14.0, 16.0)), seed=2)
    if shared_frame:  # two reconstructions of one scan
        for ds in unlabelled.ct:
            ds.FrameOfReferenceUID = labelled.ct[0].FrameOfReferenceUID
    unlabelled.rtstruct = None
    folder = tmp_path / "in"
    unlabelled.write(folder, ct_names="a-{k:03d}.dcm")
    labelled.write(folder, ct_names="b-{k:03d}.dcm", rtstruct_name="RS-b.dcm")

    manifest = ingest_manifest(folder, tmp_path / "cache")
    assert accepted_sources(manifest) == ["RS-b.dcm"]
    _, label, _ = load_case(tmp_path / "cache", manifest.cases[0])
    assert dice(label, labelled.truth) >= 0.97
    assert dice(label, unlabelled.truth) < 0.9
    reason = rejection_for(manifest, ".").reason
    assert series_uid(unlabelled) in reason and "no RTSTRUCT references it" in reason


# --- non-DICOM files -----------------------------------------------------------------------------------

NON_DICOM = {
    "notes.txt": b"exported by the planning system\nno images here\n",
    "scout.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3,
    "empty.dcm": b"",
    "zeros.bin": b"\0" * 1024,
    ".DS_Store": b"Bud1" + b"\x00\x01" * 40,
}


@pytest.mark.parametrize("where", ["case folder", "top level"])
def test_non_dicom_files_are_counted_and_never_stop_ingestion(tmp_path: Path, where: str) -> None:
    study = make_study(SMALL).write(tmp_path / "in" / "case")
    folder = tmp_path / "in" / "case" if where == "case folder" else tmp_path / "in"
    for name, payload in NON_DICOM.items():
        (folder / name).write_bytes(payload)

    report = ingest_site(tmp_path / "in", tmp_path / "cache")
    manifest = Manifest.load(tmp_path / "cache")
    assert manifest.skipped_non_dicom == len(NON_DICOM)
    assert accepted_sources(manifest) == ["case/RS.dcm"]
    assert not manifest.rejected
    assert report.manifest.cases[0].shape == list(study.geometry.shape)


# --- the CLI -------------------------------------------------------------------------------------------


def _two_good_three_bad(root: Path) -> None:
    make_study(SMALL, seed=1).write(root / "good-1")
    make_study(SMALL, seed=2).write(root / "good-2")
    unlabelled = make_study(SMALL, seed=3)
    unlabelled.rtstruct = None
    unlabelled.write(root / "bad-unlabelled")
    make_study(SMALL, seed=4, roi_name="LIVER").write(root / "bad-roi")
    gap = make_study(SMALL, seed=5).write(root / "bad-gap")
    gap.files[6].unlink()


def test_cli_bad_cases_never_stop_the_good_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _two_good_three_bad(tmp_path / "in")
    code = main(["ingest", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0
    manifest = Manifest.load(tmp_path / "cache")
    assert accepted_sources(manifest) == ["good-1/RS.dcm", "good-2/RS.dcm"]
    assert {rejection.source for rejection in manifest.rejected} == {
        "bad-unlabelled",
        "bad-roi/RS.dcm",
        "bad-gap/RS.dcm",
    }
    assert sum(line.startswith("rejected ") for line in out.splitlines()) == 3
    assert "2 case(s)" in out


def _only_bad(root: Path) -> None:
    unlabelled = make_study(SMALL, seed=3)
    unlabelled.rtstruct = None
    unlabelled.write(root / "unlabelled")
    gap = make_study(SMALL, seed=5).write(root / "gap")
    gap.files[6].unlink()


def test_cli_only_bad_cases_exits_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _only_bad(tmp_path / "in")
    code = main(["ingest", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("dose3d: error:")]
    assert len(errors) == 1
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    assert "Traceback" not in err
    assert "no usable case" in errors[0] and "2 rejected" in errors[0]
    assert len(Manifest.load(tmp_path / "cache").rejected) == 2


def test_cli_only_bad_cases_console_stderr_is_exactly_the_error_line(tmp_path: Path) -> None:
    _only_bad(tmp_path / "in")
    command = [sys.executable, "-m", "dose3d_fl.cli", "ingest", "--input", str(tmp_path / "in")]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "cache")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "dose3d: error: no usable case" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_missing_input_folder_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["ingest", "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dose3d: error:") and str(tmp_path / "nowhere") in lines[0]
    assert not (tmp_path / "cache").exists()


def test_cli_absent_roi_lists_the_rois_present(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_study(SMALL).write(tmp_path / "in")
    code = main(
        ["ingest", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cache"), "--roi", "LIVER"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "ROI 'LIVER' absent from RTSTRUCT (ROIs: SPLEEN)" in err
    assert rejection_for(Manifest.load(tmp_path / "cache"), "RS.dcm").reason == (
        "ROI 'LIVER' absent from RTSTRUCT (ROIs: SPLEEN)"
    )


# --- the cache -----------------------------------------------------------------------------------------


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root`` outside ``skip``: files with (size, mtime), folders with None."""
    state: dict[str, tuple[int, int] | None] = {}
    for path in root.rglob("*"):
        if path == skip or skip in path.parents:
            continue
        stat = path.stat()
        state[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else None
    return state


def _input_folder_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in [root, *root.rglob("*")] if p.is_dir()}


def test_nothing_is_written_outside_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    _two_good_three_bad(site / "dicom")
    (site / "README.txt").write_text("site export\n")
    cache = site / "cache"
    before, folders_before = _snapshot(tmp_path, cache), _input_folder_mtimes(site / "dicom")

    for _ in range(2):  # a first conversion, then a re-run that reuses it
        assert main(["ingest", "--input", str(site / "dicom"), "--out", str(cache)]) == 0
    capsys.readouterr()

    assert _snapshot(tmp_path, cache) == before
    assert _input_folder_mtimes(site / "dicom") == folders_before
    written = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    ids = [case.id for case in Manifest.load(cache).cases]
    assert written == {"manifest.json"} | {f"{kind}/{i}.nii.gz" for kind in ("images", "labels") for i in ids}


def _ids_by_source(manifest: Manifest) -> dict[str, str]:
    return {case.structure_set.split("/")[0]: case.id for case in manifest.cases}


def _nifti_mtimes(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*.nii.gz")}


@pytest.fixture
def converted_site(tmp_path: Path) -> tuple[Path, Path, dict[str, Study]]:
    """Two cases (``a``, ``b``) ingested once."""
    studies = {
        name: make_study(SMALL, seed=seed).write(tmp_path / "in" / name)
        for name, seed in (("a", 1), ("b", 2))
    }
    report = ingest_site(tmp_path / "in", tmp_path / "cache")
    assert len(report.converted) == 2 and not report.reused
    return tmp_path / "in", tmp_path / "cache", studies


def test_rerun_reuses_unchanged_cases(converted_site: tuple[Path, Path, dict[str, Study]]) -> None:
    input_dir, cache, _ = converted_site
    first = Manifest.load(cache)
    mtimes = _nifti_mtimes(cache)

    report = ingest_site(input_dir, cache)
    assert report.converted == []
    assert sorted(report.reused) == sorted(case.id for case in first.cases)
    assert _nifti_mtimes(cache) == mtimes
    assert Manifest.load(cache).cases == first.cases


def test_rerun_reconverts_a_case_whose_source_changed(
    converted_site: tuple[Path, Path, dict[str, Study]],
) -> None:
    input_dir, cache, studies = converted_site
    ids = _ids_by_source(Manifest.load(cache))
    mtimes = _nifti_mtimes(cache)
    path = studies["a"].files[3]
    ds = dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[0, 0] = 3000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)

    report = ingest_site(input_dir, cache)
    assert report.converted == [ids["a"]]
    assert report.reused == [ids["b"]]
    image, _, _ = load_case(cache, next(c for c in report.manifest.cases if c.id == ids["a"]))
    assert image[0, 0, 3] == 3000 + float(ds.RescaleIntercept)
    unchanged = {name for name in mtimes if ids["b"] in name}
    assert {name: _nifti_mtimes(cache)[name] for name in unchanged} == {
        name: mtimes[name] for name in unchanged
    }


def test_removed_case_leaves_the_manifest_and_the_cache(
    converted_site: tuple[Path, Path, dict[str, Study]],
) -> None:
    input_dir, cache, _ = converted_site
    ids = _ids_by_source(Manifest.load(cache))
    shutil.rmtree(input_dir / "b")

    report = ingest_site(input_dir, cache)
    assert report.reused == [ids["a"]] and report.converted == []
    assert [case.id for case in Manifest.load(cache).cases] == [ids["a"]]
    assert sorted(_nifti_mtimes(cache)) == [f"images/{ids['a']}.nii.gz", f"labels/{ids['a']}.nii.gz"]


def test_case_that_becomes_invalid_is_rejected_and_its_files_removed(
    converted_site: tuple[Path, Path, dict[str, Study]],
) -> None:
    input_dir, cache, studies = converted_site
    ids = _ids_by_source(Manifest.load(cache))
    studies["a"].files[6].unlink()

    manifest = ingest_site(input_dir, cache).manifest
    assert [case.id for case in manifest.cases] == [ids["b"]]
    assert "slice gap" in rejection_for(manifest, "a/RS.dcm").reason
    assert not any(ids["a"] in name for name in _nifti_mtimes(cache))


def test_only_a_real_config_change_reconverts(converted_site: tuple[Path, Path, dict[str, Study]]) -> None:
    input_dir, cache, _ = converted_site
    report = ingest_site(input_dir, cache, IngestConfig(roi="spleen"))
    assert sorted(report.reused) == sorted(_ids_by_source(report.manifest).values())
    report = ingest_site(input_dir, cache, IngestConfig(roi="SPLEEN", min_slices=4))
    assert len(report.converted) == 2 and not report.reused


def test_manifest_describes_the_case_without_patient_identifiers(tmp_path: Path) -> None:
    make_study(SMALL).write(tmp_path / "in")
    report = ingest_site(tmp_path / "in", tmp_path / "cache")
    assert Manifest.load(tmp_path / "cache") == report.manifest
    case = report.manifest.cases[0]
    assert (case.source, case.structure_set, case.roi, case.orientation) == (".", "RS.dcm", "SPLEEN", "LPS")
    assert (case.shape, case.spacing) == ([24, 20, 12], [6.0, 7.0, 8.0])
    ellipsoid_ml = 4 / 3 * np.pi * 40 * 25 * 30 / 1000
    assert abs(case.roi_volume_ml - ellipsoid_ml) < 0.1 * ellipsoid_ml
    assert sorted(os.listdir(tmp_path / "cache" / "images")) == [f"{case.id}.nii.gz"]
    # The builders put "SYNTHPHI" in every patient and study attribute.
    assert "SYNTHPHI" not in (tmp_path / "cache" / "manifest.json").read_text()
