"""RT Structure Set writer, reader and rasteriser."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dose3d_fl.data.contours import mask_from_polygons, polygons_from_field
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.rtstruct import (
    RT_STRUCTURE_SET_STORAGE,
    RoiContours,
    build_rtstruct,
    rasterise_contours,
    read_structure_set,
)
from tests.data.dicom_builders import SMALL, axial_geometry, load_case, make_study

COS20, SIN20 = math.cos(math.radians(20)), math.sin(math.radians(20))


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """Signed field of a disc on a ``(rows, columns)`` slice; negative inside."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) - radius


def _two_roi_structure_set():
    """A CT study and a structure set with an organ (discs on slices 3-8) and a body outline (every slice)."""
    study = make_study(SMALL)
    cols, rows, slices = SMALL.shape
    organ = {
        k: polygons_from_field(_disc((rows, cols), (9.3, 11.6), 2.0 + abs(k - 5.5))) for k in range(3, 9)
    }
    body_polygon = np.array([[1.5, 1.5], [1.5, cols - 2.5], [rows - 2.5, cols - 2.5], [rows - 2.5, 1.5]])
    body = {k: [body_polygon] for k in range(slices)}
    rois = [
        RoiContours("Spleen", (255, 128, 0), "ORGAN", organ),
        RoiContours("BODY", (0, 255, 0), "EXTERNAL", body),
    ]
    uids = [str(ds.SOPInstanceUID) for ds in study.ct]
    ds = build_rtstruct(
        study.ct[0], uids, SMALL, rois, sop_instance_uid=generate_uid(), series_instance_uid=generate_uid()
    )
    return study, rois, ds


def test_structure_set_round_trip_through_a_file(tmp_path: Path) -> None:
    study, rois, built = _two_roi_structure_set()
    built.save_as(tmp_path / "RS.dcm", enforce_file_format=True)
    ds = dcmread(tmp_path / "RS.dcm")
    ct = study.ct[0]

    assert ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE and ds.Modality == "RTSTRUCT"
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert ds.data_element(keyword).value == ct.data_element(keyword).value
    assert ds.SeriesInstanceUID != ct.SeriesInstanceUID

    structure_set = read_structure_set(ds)
    assert structure_set.sop_instance_uid == built.SOPInstanceUID
    assert structure_set.frame_of_reference_uids == {str(ct.FrameOfReferenceUID)}
    assert structure_set.referenced_series_uids == {str(ct.SeriesInstanceUID)}
    assert structure_set.referenced_sop_instance_uids == {str(s.SOPInstanceUID) for s in study.ct}
    assert list(structure_set.rois) == ["Spleen", "BODY"]

    colours = {int(item.ReferencedROINumber): list(item.ROIDisplayColor) for item in ds.ROIContourSequence}
    types = {
        int(item.ReferencedROINumber): item.RTROIInterpretedType for item in ds.RTROIObservationsSequence
    }
    for number, roi in enumerate(rois, start=1):
        read = structure_set.rois[roi.name]
        assert read.number == number
        assert colours[number] == list(roi.color)
        assert types[number] == roi.interpreted_type
        assert len(read.contours) == sum(len(polygons) for polygons in roi.slices.values())
        assert read.skipped_non_planar == 0
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert int(contour.NumberOfContourPoints) * 3 == len(contour.ContourData)
            (image,) = contour.ContourImageSequence
            assert image.ReferencedSOPClassUID == ct.SOPClassUID


def test_written_contours_rasterise_back_to_the_polygons_masks() -> None:
    _, rois, ds = _two_roi_structure_set()
    structure_set = read_structure_set(ds)
    cols, rows, slices = SMALL.shape
    for roi in rois:
        mask, off_slice = rasterise_contours(structure_set.rois[roi.name].contours, SMALL)
        assert off_slice == 0
        for k in range(slices):
            expected = mask_from_polygons(roi.slices.get(k, []), (rows, cols))
            np.testing.assert_array_equal(mask[:, :, k], expected.T)


def test_find_roi_ignores_case_and_surrounding_spaces() -> None:
    structure_set = read_structure_set(_two_roi_structure_set()[2])
    assert structure_set.find_roi("  SPLEEN ").name == "Spleen"
    assert structure_set.find_roi("body").name == "BODY"
    assert structure_set.find_roi("LIVER") is None


@pytest.mark.parametrize("geometric_type", ["POINT", "OPEN_PLANAR", "OPEN_NONPLANAR"])
def test_non_closed_contours_are_counted_not_used(geometric_type: str) -> None:
    ds = _two_roi_structure_set()[2]
    contours = ds.ROIContourSequence[0].ContourSequence
    contours[0].ContourGeometricType = geometric_type
    read = read_structure_set(ds).rois["Spleen"]
    assert read.skipped_non_planar == 1
    assert len(read.contours) == len(contours) - 1


def test_missing_optional_sequences_give_empty_references() -> None:
    ds = _two_roi_structure_set()[2]
    del ds.ReferencedFrameOfReferenceSequence
    del ds.ROIContourSequence
    structure_set = read_structure_set(ds)
    assert structure_set.referenced_series_uids == set()
    assert structure_set.referenced_sop_instance_uids == set()
    # The ROI still names its frame of reference.
    assert len(structure_set.frame_of_reference_uids) == 1
    assert all(not roi.contours for roi in structure_set.rois.values())


# --- rasterise_contours -------------------------------------------------------------------------------------

GRIDS = {
    "axial": VolumeGeometry(
        (10, 8, 5), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2.0, 2.5, 3.0), (-10.0, -8.0, -6.0)
    ),
    "normal-down": VolumeGeometry(
        (10, 8, 5), (-1, 0, 0), (0, 1, 0), (0, 0, -1), (2.0, 2.5, 3.0), (10.0, -8.0, 6.0)
    ),
    "sagittal": VolumeGeometry(
        (10, 8, 5), (0, 1, 0), (0, 0, -1), (-1, 0, 0), (2.0, 2.5, 3.0), (6.0, -10.0, 8.0)
    ),
    "oblique": VolumeGeometry(
        (10, 8, 5), (1, 0, 0), (0, COS20, SIN20), (0, -SIN20, COS20), (2.0, 2.5, 3.0), (-10.0, -8.0, -6.0)
    ),
}


def _rectangle(k: int) -> np.ndarray:
    """A rectangle of ``(row, column)`` vertices covering ``k + 1`` rows, so slices cannot be confused.

    Vertices lie half-way between voxel centres: no centre is on an edge.
    """
    return np.array([[0.5, 0.5], [0.5, 8.5], [1.5 + k, 8.5], [1.5 + k, 0.5]])


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_each_contour_lands_on_its_slice_whatever_the_order(grid: VolumeGeometry) -> None:
    cols, rows, slices = grid.shape
    contours = [grid.pixel_to_patient(_rectangle(k), k) for k in range(slices)]
    order = np.random.default_rng(0).permutation(slices)
    mask, off_slice = rasterise_contours([contours[i] for i in order], grid)
    assert off_slice == 0
    for k in range(slices):
        np.testing.assert_array_equal(mask[:, :, k], mask_from_polygons([_rectangle(k)], (rows, cols)).T)


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_contours_between_slices_or_not_planar_are_reported_off_slice(grid: VolumeGeometry) -> None:
    step = grid.spacing[2] * np.asarray(grid.slice_direction)
    on_slice = grid.pixel_to_patient(_rectangle(1), 1)
    # 0.2 mm off its slice, as rounding in a planning system leaves it: still on the slice.
    close = grid.pixel_to_patient(_rectangle(2), 2) + 0.2 * step / grid.spacing[2]
    between = grid.pixel_to_patient(_rectangle(3), 3) + 0.5 * step
    tilted = grid.pixel_to_patient(_rectangle(4), 4) + np.outer(np.linspace(-1, 1, 4), step)
    beyond = grid.pixel_to_patient(_rectangle(0), 0) - step  # one slice before the volume

    mask, off_slice = rasterise_contours([on_slice, close, between, tilted, beyond], grid)
    assert off_slice == 3
    assert [bool(mask[:, :, k].any()) for k in range(grid.shape[2])] == [False, True, True, False, False]


def test_polygons_on_one_slice_combine_with_the_even_odd_rule() -> None:
    grid = GRIDS["axial"]
    outer = np.array([[0.5, 0.5], [0.5, 8.5], [6.5, 8.5], [6.5, 0.5]])
    inner = np.array([[2.5, 2.5], [2.5, 6.5], [4.5, 6.5], [4.5, 2.5]])
    mask, _ = rasterise_contours([grid.pixel_to_patient(p, 2) for p in (outer, inner)], grid)
    ring = mask[:, :, 2].T
    assert ring[1, 1] and not ring[3, 4] and ring.sum() == 6 * 8 - 2 * 4


# --- a structure cut by the image edge ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "orientation"),
    [
        pytest.param((3.0, 3.5, 4.0), ((1, 0, 0), (0, 1, 0)), id="axial-round-spacing"),
        pytest.param(
            (2.9296875, 3.3203125, 3.7),
            ((1, 0, 0), (0, 1, 0)),
            id="axial-scanner-spacing",
        ),
        pytest.param(
            (3.0, 3.5, 4.0),
            ((1, 0, 0), (0, COS20, SIN20)),
            id="oblique",
        ),
    ],
)
def test_structure_cut_by_the_image_edge_survives_export_and_ingestion(
    tmp_path: Path, spacing: tuple[float, float, float], orientation
) -> None:
    study = make_study(axial_geometry(shape=(18, 12, 16), spacing=spacing, orientation=orientation))
    assert study.truth[0].any() and study.truth[:, 0].any() and study.truth[:, -1].any()
    study.write(tmp_path / "in")
    case = ingest_site(tmp_path / "in", tmp_path / "cache").manifest.cases[0]
    _, label, _ = load_case(tmp_path / "cache", case)
    np.testing.assert_array_equal(label, study.truth)
