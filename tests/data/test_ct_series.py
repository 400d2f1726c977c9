"""CT series rules: orientation, slice order, rescale, transfer syntaxes and every series-level rejection.

Each case goes through the real ingestion beside a valid case, so each test also proves that one bad
series never stops the others.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import dcmread
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from dose3d_fl.data.ct_series import ENHANCED_CT_IMAGE_STORAGE
from dose3d_fl.data.ingest import ingest_site
from tests.data.dicom_builders import (
    SMALL,
    Study,
    accepted_sources,
    axial_geometry,
    dice,
    ingest_manifest,
    load_case,
    make_study,
    rejection_for,
    series_uid,
    world_truth,
    write_with_good_case,
)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
MPEG2_MAIN_PROFILE = "1.2.840.10008.1.2.4.100"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"  # DICOM 2024; unknown to pydicom 3.0
ORGAN_HU, FAT_HU = 45.0, -100.0
COS20, SIN20 = math.cos(math.radians(20)), math.sin(math.radians(20))


# --- orientation and slice order -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation",
    [
        pytest.param(((1, 0, 0), (0, 1, 0)), id="axial"),
        pytest.param(((-1, 0, 0), (0, -1, 0)), id="axial-rotated-180"),
        pytest.param(((-1, 0, 0), (0, 1, 0)), id="axial-mirrored-normal-down"),
        pytest.param(((0, 1, 0), (0, 0, -1)), id="sagittal"),
        pytest.param(((1, 0, 0), (0, COS20, SIN20)), id="oblique-20deg"),
    ],
)
def test_label_and_image_align_in_world_coordinates(tmp_path: Path, orientation) -> None:
    study = make_study(axial_geometry(orientation=orientation)).write(tmp_path / "in")
    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert not manifest.rejected
    (case,) = manifest.cases
    image, label, affine = load_case(tmp_path / "cache", case)

    assert dice(label, world_truth(affine, label.shape)) >= 0.97
    assert abs(image[label].mean() - ORGAN_HU) < 3
    assert abs(image[~label].mean() - FAT_HU) < 3
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), case.spacing, atol=1e-3)

    headers = [dcmread(path) for path in study.files if path.name.startswith("CT")]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    first = min(headers, key=lambda ds: np.asarray(ds.ImagePositionPatient, dtype=float) @ normal)
    ras_first = np.asarray(first.ImagePositionPatient, dtype=float) * [-1, -1, 1]
    np.testing.assert_allclose(affine[:3, 3], ras_first, atol=1e-3)


def test_shuffled_instance_numbers_and_file_names_give_identical_output(tmp_path: Path) -> None:
    study = make_study(SMALL)
    study.write(tmp_path / "ordered")
    rng = np.random.default_rng(7)
    for ds, number in zip(study.ct, rng.permutation(len(study.ct)) + 1, strict=True):
        ds.InstanceNumber = int(number)
    # Arbitrary names, no extension, spread over nested folders in an order unrelated to position.
    shuffled = tmp_path / "shuffled"
    for k, ds in enumerate(study.ct):
        folder = shuffled / f"sub{rng.integers(3)}" / ("deep" if k % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{rng.integers(1 << 40):x}", enforce_file_format=True)
    study.rtstruct.save_as(shuffled / "IMG0001", enforce_file_format=True)

    ordered = ingest_site(tmp_path / "ordered", tmp_path / "cache-ordered").manifest.cases[0]
    other = ingest_site(shuffled, tmp_path / "cache-shuffled").manifest.cases[0]
    for a, b in zip(
        load_case(tmp_path / "cache-ordered", ordered),
        load_case(tmp_path / "cache-shuffled", other),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    for key in ("id", "spacing", "shape", "roi", "roi_volume_ml", "orientation"):
        assert getattr(ordered, key) == getattr(other, key)


# --- rescale and transfer syntaxes -----------------------------------------------------------------------


def _hu_from_datasets(study: Study) -> np.ndarray:
    """HU decoded from the stored pixels with numpy alone: (columns, rows, slices) for an axial grid."""
    return np.stack(
        [
            np.frombuffer(ds.PixelData, dtype="<i2").reshape(ds.Rows, ds.Columns).T * float(ds.RescaleSlope)
            + float(ds.RescaleIntercept)
            for ds in study.ct
        ],
        axis=-1,
    )


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.0), (1.0, 0.0), (2.0, -1024.0)])
def test_rescale_gives_hounsfield_units(tmp_path: Path, slope: float, intercept: float) -> None:
    study = make_study(SMALL, seed=3, rescale_slope=slope, rescale_intercept=intercept).write(tmp_path / "in")
    make_study(SMALL, seed=3).write(tmp_path / "reference")
    case = ingest_site(tmp_path / "in", tmp_path / "cache").manifest.cases[0]
    image, label, _ = load_case(tmp_path / "cache", case)
    reference_case = ingest_site(tmp_path / "reference", tmp_path / "cache-reference").manifest.cases[0]
    reference_image, _, _ = load_case(tmp_path / "cache-reference", reference_case)

    np.testing.assert_allclose(image, _hu_from_datasets(study), atol=1e-3)
    assert image.dtype == (np.int16 if float(slope).is_integer() else np.float32)
    # Same underlying HU, stored with another rescale: equal within the quantisation of both.
    assert np.abs(image.astype(float) - reference_image).max() <= slope / 2 + 0.5 + 1e-6
    assert abs(image[label].mean() - ORGAN_HU) < 3 and abs(image[~label].mean() - FAT_HU) < 3


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian],
    ids=["rle-lossless", "jpeg2000-lossless", "deflated", "implicit-vr"],
)
def test_other_transfer_syntaxes_give_identical_hu(tmp_path: Path, syntax: UID) -> None:
    study = make_study()  # openjpeg cannot encode images as small as SMALL's 24 x 20
    study.write(tmp_path / "plain")
    for ds in study.ct:
        if syntax.is_compressed:
            ds.compress(syntax)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
    study.write(tmp_path / "encoded")
    assert dcmread(study.files[0]).file_meta.TransferSyntaxUID == syntax

    plain = ingest_site(tmp_path / "plain", tmp_path / "cache-plain").manifest.cases[0]
    encoded = ingest_site(tmp_path / "encoded", tmp_path / "cache-encoded").manifest.cases[0]
    for a, b in zip(
        load_case(tmp_path / "cache-plain", plain),
        load_case(tmp_path / "cache-encoded", encoded),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


# --- series-level rejections -------------------------------------------------------------------------------


def _move_slice(study: Study) -> None:
    x, y, z = (float(v) for v in study.ct[6].ImagePositionPatient)
    study.ct[6].ImagePositionPatient = [x, y, z + 3.0]


def _gantry_tilt(study: Study) -> None:
    for ds in study.ct:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + z * math.tan(math.radians(15)), 4), z]
        ds.GantryDetectorTilt = 15


def _other_matrix(study: Study) -> None:
    ds = study.ct[6]
    ds.Rows = ds.Rows - 1
    ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * 2]


def _other_pixel_spacing(study: Study) -> None:
    study.ct[6].PixelSpacing = [7.5, 6.0]


def _other_orientation(study: Study) -> None:
    study.ct[6].ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]


def _other_frame(study: Study) -> None:
    study.ct[6].FrameOfReferenceUID = generate_uid()


def _no_position(study: Study) -> None:
    del study.ct[6].ImagePositionPatient


def _skewed_orientation(study: Study) -> None:
    for ds in study.ct:
        ds.ImageOrientationPatient = [1, 0, 0, 0.2, 1, 0]


def _mr(study: Study) -> None:
    for ds in study.ct:
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE


def _single_slice(study: Study) -> None:
    study.ct = study.ct[5:6]


def _duplicate_position(study: Study) -> None:
    """A second acquisition at the same position, filed in the same series."""
    again = copy.deepcopy(study.ct[5])
    again.SOPInstanceUID = again.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    study.ct.append(again)


def _enhanced_sop_class(study: Study) -> None:
    for ds in study.ct:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT_IMAGE_STORAGE


def _enhanced_multiframe(study: Study) -> None:
    """One multi-frame object; per-frame geometry would live in functional groups, absent at top level."""
    frames = b"".join(ds.PixelData for ds in study.ct)
    ds = study.ct[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation"):
        delattr(ds, keyword)
    ds.NumberOfFrames = len(study.ct)
    ds.PixelData = frames
    study.ct = [ds]


def _mpeg2(study: Study) -> None:
    for ds in study.ct:
        ds.compress(RLELossless)
        ds.file_meta.TransferSyntaxUID = UID(MPEG2_MAIN_PROFILE)


def _delete_middle_file(study: Study) -> None:
    study.files[6].unlink()


def _cut_last_bytes(study: Study) -> None:
    data = study.files[6].read_bytes()
    study.files[6].write_bytes(data[:-7])


REJECTIONS = [
    # id, edit before writing, damage after writing, fragments the reason must contain
    ("missing-slice", None, _delete_middle_file, ["slice gap of 16.00 mm", "1 slice(s) missing"]),
    ("non-uniform-spacing", _move_slice, None, ["non-uniform slice spacing", "5.00 to 11.00 mm"]),
    ("gantry-tilt", _gantry_tilt, None, ["gantry tilt of 15.0 degrees", "GantryDetectorTilt=15"]),
    ("inconsistent-rows", _other_matrix, None, ["inconsistent Rows/Columns", "19x24 in 1", "CT006.dcm"]),
    ("inconsistent-pixel-spacing", _other_pixel_spacing, None, ["inconsistent PixelSpacing", "CT006.dcm"]),
    (
        "inconsistent-orientation",
        _other_orientation,
        None,
        ["inconsistent ImageOrientationPatient", "CT006.dcm"],
    ),
    ("inconsistent-frame", _other_frame, None, ["inconsistent FrameOfReferenceUID", "CT006.dcm"]),
    ("missing-position", _no_position, None, ["file CT006.dcm lacks ImagePositionPatient"]),
    ("skewed-orientation", _skewed_orientation, None, ["is not two orthogonal unit vectors"]),
    ("truncated-pixel-data", None, _cut_last_bytes, ["file CT006.dcm", "pixel data truncated"]),
    ("mr-modality", _mr, None, ["modality MR, not CT"]),
    ("single-slice", _single_slice, None, ["1 slice(s)", "at least 3"]),
    ("duplicate-position", _duplicate_position, None, ["CT005.dcm and CT012.dcm share slice position"]),
    ("enhanced-ct-sop-class", _enhanced_sop_class, None, ["Enhanced (multi-frame) CT is not supported"]),
    ("enhanced-ct-multiframe", _enhanced_multiframe, None, ["Enhanced (multi-frame) CT is not supported"]),
    ("mpeg2-transfer-syntax", _mpeg2, None, ["file CT000.dcm", "cannot decode", "MPEG2", MPEG2_MAIN_PROFILE]),
]


@pytest.mark.parametrize(("edit", "damage", "fragments"), [pytest.param(*r[1:], id=r[0]) for r in REJECTIONS])
def test_series_rejection_names_the_series_and_the_problem(
    tmp_path: Path,
    edit: Callable[[Study], None] | None,
    damage: Callable[[Study], None] | None,
    fragments: list[str],
) -> None:
    study = make_study(SMALL)
    if edit is not None:
        edit(study)
    write_with_good_case(tmp_path / "in", study)
    if damage is not None:
        damage(study)

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    assert len(manifest.rejected) == 1
    reason = rejection_for(manifest, "case/RS.dcm").reason
    assert f"series {series_uid(study)}" in reason
    for fragment in fragments:
        assert fragment in reason
    assert "\n" not in reason


def test_skewed_orientation_reason_shows_plain_numbers(tmp_path: Path) -> None:
    study = make_study(SMALL)
    _skewed_orientation(study)
    manifest = ingest_manifest(write_with_good_case(tmp_path / "in", study), tmp_path / "cache")
    reason = rejection_for(manifest, "case/RS.dcm").reason
    assert "np.float64" not in reason
    assert "[1, 0, 0, 0.2, 1, 0]" in reason


def test_unknown_transfer_syntax_is_rejected_as_undecodable(tmp_path: Path) -> None:
    study = make_study(SMALL)
    write_with_good_case(tmp_path / "in", study)
    for path in study.files[:-1]:
        ds = dcmread(path)
        ds.compress(RLELossless)
        ds.file_meta.TransferSyntaxUID = UID(JPEG_XL_LOSSLESS)
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True, force_encoding=True)

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    reason = rejection_for(manifest, "case/RS.dcm").reason
    assert "decode" in reason and JPEG_XL_LOSSLESS in reason


def test_file_truncated_to_half_is_named_and_others_still_accepted(tmp_path: Path) -> None:
    study = make_study()  # 48 x 40 slices: half of the file still holds the whole header
    study.write(tmp_path / "in" / "case")
    make_study(SMALL, seed=99).write(tmp_path / "in" / "good")
    data = study.files[6].read_bytes()
    study.files[6].write_bytes(data[: len(data) // 2])

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    reason = rejection_for(manifest, "case/RS.dcm").reason
    assert f"series {series_uid(study)}" in reason
    assert "file CT006.dcm" in reason and "truncated" in reason


@pytest.mark.parametrize(
    ("slice_index", "keep"),
    [(0, lambda size: 600), (6, lambda size: 600), (6, lambda size: size // 2)],
    ids=["end-slice-600-bytes", "middle-slice-600-bytes", "middle-slice-half-of-a-small-file"],
)
def test_file_truncated_in_its_header_is_named(
    tmp_path: Path, slice_index: int, keep: Callable[[int], int]
) -> None:
    study = make_study(SMALL)
    write_with_good_case(tmp_path / "in", study)
    path = study.files[slice_index]
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert "good/RS.dcm" in accepted_sources(manifest)
    assert any(
        path.name in rejection.source or path.name in rejection.reason for rejection in manifest.rejected
    )
