"""Real DICOM files shipped in the pydicom wheel, as odd or broken site exports.

``CT5N`` (5 contiguous 16 x 16 slices), ``CT2`` (4 slices with a large gap) and ``CT_small.dcm`` (one slice)
are real scanner headers; the structure sets for them are written with the project's own writer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dose3d_fl.cli import main
from dose3d_fl.data.contours import mask_from_polygons, polygons_from_field
from dose3d_fl.data.ct_series import load_ct_series
from dose3d_fl.data.discovery import discover_dicom
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.ingest import IngestError, ingest_site
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct, read_structure_set
from tests.data.dicom_builders import (
    SMALL,
    accepted_sources,
    as_physician_delineation,
    ingest_manifest,
    load_case,
    make_study,
    rejection_for,
)

DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"
CT5N = DICOMDIR_TESTS / "98892001" / "CT5N"
CT2 = DICOMDIR_TESTS / "77654033" / "CT2"
IMAGE_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1."
RT_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.481."


def _testdata(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name, download=False))


def _copy(source: Path, folder: Path) -> Path:
    """Copy a file or a folder of the wheel into ``folder`` (created); return the folder."""
    if source.is_dir():
        shutil.copytree(source, folder, dirs_exist_ok=True)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / source.name)
    return folder


def _only_series(folder: Path):
    (series,) = discover_dicom(folder).image_series.values()
    return series


def _lowest_slice_geometry(headers: list[Dataset]) -> tuple[VolumeGeometry, list[Dataset]]:
    """The grid of the lowest slice of an axial series that ingestion rejects (so load_ct_series cannot
    build it), and the headers sorted by height."""
    ordered = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    first = ordered[0]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    geometry = VolumeGeometry(
        shape=(int(first.Columns), int(first.Rows), len(ordered)),
        row_direction=tuple(iop[:3]),
        column_direction=tuple(iop[3:]),
        slice_direction=tuple(np.cross(iop[:3], iop[3:])),
        spacing=(col_spacing, row_spacing, float(first.get("SliceThickness") or 1.0)),
        origin=tuple(float(v) for v in first.ImagePositionPatient),
    )
    return geometry, ordered


def _write_rtstruct(
    folder: Path,
    ct: Dataset,
    sop_instance_uids: list[str],
    geometry: VolumeGeometry,
    slices: dict[int, list[np.ndarray]],
) -> Dataset:
    ds = build_rtstruct(
        ct,
        sop_instance_uids,
        geometry,
        [RoiContours("SPLEEN", (255, 128, 0), "ORGAN", slices)],
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
    )
    as_physician_delineation(ds)
    ds.save_as(folder / "RS.dcm", enforce_file_format=True)
    return ds


def _label_rejected_series(folder: Path) -> str:
    """Contour a disc on the lowest slice of the single series in ``folder``; return its SeriesInstanceUID."""
    series = _only_series(folder)
    geometry, ordered = _lowest_slice_geometry(series.headers)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    disc = (
        np.hypot(*np.mgrid[:rows, :cols] - np.array([rows / 2 - 0.3, cols / 2 + 0.2])[:, None, None])
        - rows / 4
    )
    _write_rtstruct(
        folder, ordered[0], [str(h.SOPInstanceUID) for h in ordered], geometry, {0: polygons_from_field(disc)}
    )
    return series.series_instance_uid


def _label_ct5n(folder: Path) -> np.ndarray:
    """Write an RTSTRUCT with discs on the three middle slices of CT5N; return the expected label."""
    volume = load_ct_series(_only_series(folder))
    cols, rows, _ = volume.geometry.shape
    expected = np.zeros(volume.geometry.shape, dtype=bool)
    contours = {}
    for k, radius in ((1, 3.2), (2, 5.1), (3, 4.3)):
        field = np.hypot(*np.mgrid[:rows, :cols] - np.array([7.3, 8.6])[:, None, None]) - radius
        contours[k] = polygons_from_field(field)
        expected[:, :, k] = mask_from_polygons(contours[k], (rows, cols)).T
    ct = dcmread(volume.files[0], stop_before_pixels=True)
    _write_rtstruct(folder, ct, volume.sop_instance_uids, volume.geometry, contours)
    return expected


# --- single real series -----------------------------------------------------------------------------------


def test_ct_small_alone_exits_2_naming_the_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(_testdata("CT_small.dcm"), tmp_path / "in")
    uid = str(dcmread(folder / "CT_small.dcm", stop_before_pixels=True).SeriesInstanceUID)
    code = main(["ingest", "--input", str(folder), "--out", str(tmp_path / "cache")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dose3d: error:")]
    assert code == 2
    assert len(errors) == 1 and uid in errors[0]
    reason = rejection_for(ingest_manifest(folder, tmp_path / "cache"), ".").reason
    assert f"series {uid}: 1 slice(s)" in reason
    assert "not a 3D volume" in reason and "no RTSTRUCT references it" in reason


def test_ct_small_with_a_structure_set_is_rejected_as_single_slice(tmp_path: Path) -> None:
    folder = _copy(_testdata("CT_small.dcm"), tmp_path / "in")
    uid = _label_rejected_series(folder)
    reason = rejection_for(ingest_manifest(folder, tmp_path / "cache"), "RS.dcm").reason
    assert f"series {uid}: 1 slice(s)" in reason and "at least 3" in reason


def test_ct2_with_a_structure_set_is_rejected_for_its_gap(tmp_path: Path) -> None:
    folder = _copy(CT2, tmp_path / "in")
    uid = _label_rejected_series(folder)
    manifest = ingest_manifest(folder, tmp_path / "cache")
    assert not manifest.cases
    reason = rejection_for(manifest, "RS.dcm").reason
    assert f"series {uid}: slice gap of 202.50 mm" in reason
    assert "between positions -99.48 and 103.02 mm" in reason
    assert "expected 1.25 mm, 161 slice(s) missing" in reason


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (CT5N, "CT series {uid} (5 files): no RTSTRUCT references it"),
        (CT2, "series {uid}: slice gap of 202.50 mm"),
    ],
    ids=["CT5N", "CT2"],
)
def test_real_series_without_structure_set_is_rejected(tmp_path: Path, source: Path, expected: str) -> None:
    folder = _copy(source, tmp_path / "in")
    uid = _only_series(folder).series_instance_uid
    with pytest.raises(IngestError, match="no usable case"):
        ingest_site(folder, tmp_path / "cache")
    reason = rejection_for(ingest_manifest(folder, tmp_path / "cache"), ".").reason
    # An unlabelled series is still checked, so the physicist learns what else is wrong with it.
    assert reason.startswith(expected.format(uid=uid))
    assert reason.endswith("no RTSTRUCT references it")


def test_ct5n_with_a_structure_set_is_accepted_and_aligned(tmp_path: Path) -> None:
    folder = _copy(CT5N, tmp_path / "in")
    expected = _label_ct5n(folder)
    manifest = ingest_manifest(folder, tmp_path / "cache")
    assert not manifest.rejected
    (case,) = manifest.cases
    image, label, affine = load_case(tmp_path / "cache", case)

    assert (case.shape, case.spacing) == ([16, 16, 5], [0.4883, 0.4883, 2.5])
    np.testing.assert_array_equal(label, expected)
    # InstanceNumber rises as the table moves down: slices must be ordered by position, not by number.
    slices = sorted(
        (dcmread(p) for p in folder.glob("[0-9]*")), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    assert [int(ds.InstanceNumber) for ds in slices] == [10, 9, 8, 7, 6]
    hu = np.stack(
        [ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices], -1
    )
    np.testing.assert_array_equal(image, hu)
    np.testing.assert_allclose(affine[:3, 3], np.asarray(slices[0].ImagePositionPatient, float) * [-1, -1, 1])


# --- the whole dicomdirtests tree ---------------------------------------------------------------------------


def test_dicomdirtests_tree_ingests_without_crashing_and_every_image_series_gets_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(DICOMDIR_TESTS, tmp_path / "in")
    code = main(["ingest", "--input", str(folder), "--out", str(tmp_path / "cache")])
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err
    manifest = ingest_manifest(folder, tmp_path / "cache")
    series = discover_dicom(folder).image_series
    assert len(series) == 14  # 13 with images + TINY_ALPHA, whose CT objects carry no pixel data
    for uid in series:
        assert any(uid in rejection.reason for rejection in manifest.rejected), uid
    assert manifest.skipped_non_dicom == 2  # the two README files
    assert manifest.ignored_dicom_objects == {"DICOMDIR": 8}


def test_ct5n_structure_set_inside_the_whole_tree_gives_one_case(tmp_path: Path) -> None:
    folder = _copy(DICOMDIR_TESTS, tmp_path / "in")
    alone = ingest_manifest(folder, tmp_path / "cache-alone")
    _label_ct5n(folder / "98892001" / "CT5N")
    manifest = ingest_manifest(folder, tmp_path / "cache")
    assert accepted_sources(manifest) == ["98892001/CT5N/RS.dcm"]
    assert len(manifest.rejected) == len(alone.rejected) - 1


def test_every_series_of_an_image_sop_class_gets_a_reason(tmp_path: Path) -> None:
    folder = _copy(DICOMDIR_TESTS, tmp_path / "in")
    manifest = ingest_manifest(folder, tmp_path / "cache")
    image_series = set()
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith(("DICOMDIR", "README")):
            ds = dcmread(path, stop_before_pixels=True)
            sop_class = str(ds.SOPClassUID)
            if sop_class.startswith(IMAGE_STORAGE_PREFIX) and not sop_class.startswith(RT_STORAGE_PREFIX):
                image_series.add(str(ds.SeriesInstanceUID))
    missing = {uid for uid in image_series if not any(uid in r.reason for r in manifest.rejected)}
    assert not missing


# --- other real objects -------------------------------------------------------------------------------------


def test_real_rtstruct_without_its_ct_is_rejected_naming_the_series(tmp_path: Path) -> None:
    folder = _copy(_testdata("rtstruct.dcm"), tmp_path / "in")
    structure_set = read_structure_set(dcmread(folder / "rtstruct.dcm", force=True))
    (referenced,) = structure_set.referenced_series_uids
    manifest = ingest_manifest(folder, tmp_path / "cache")
    assert not manifest.cases
    reason = rejection_for(manifest, "rtstruct.dcm").reason
    assert reason == f"RTSTRUCT references {referenced}, which is not in the input; export it with its CT"


def test_real_rtstruct_is_parsed(tmp_path: Path) -> None:
    structure_set = read_structure_set(dcmread(_testdata("rtstruct.dcm"), force=True))
    assert list(structure_set.rois) == ["patient", "Isocenter 1", "Isocenter 2"]
    patient = structure_set.find_roi("PATIENT")
    assert len(patient.contours) == 3 and all(c.shape[1] == 3 and len(c) >= 3 for c in patient.contours)
    assert [structure_set.rois[f"Isocenter {i}"].skipped_non_planar for i in (1, 2)] == [1, 1]


def test_real_mr_file_beside_a_good_case_is_rejected_and_the_case_accepted(tmp_path: Path) -> None:
    folder = _copy(_testdata("MR_truncated.dcm"), tmp_path / "in" / "mr")
    make_study(SMALL).write(tmp_path / "in" / "good")
    uid = str(dcmread(folder / "MR_truncated.dcm", stop_before_pixels=True).SeriesInstanceUID)
    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    assert rejection_for(manifest, "mr").reason == f"series {uid}: modality MR, not CT"
