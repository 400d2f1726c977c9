"""Reading the CT and its structures: what is accepted, and a one-line reason for each bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.inputs import CTInput, load_ct, read_isocentres
from dose3d_fl.geometry.structures import organs_from_labels, organs_from_rtstruct, parse_label_names
from tests.geometry.synthetic_patient import SyntheticPatient, write_rtplan


@pytest.fixture(scope="module")
def ct(patient: SyntheticPatient) -> CTInput:
    return load_ct(patient.ct_dir)


def _edited_rtstruct(patient: SyntheticPatient, path: Path, edit) -> Path:
    ds = dcmread(patient.rtstruct)
    edit(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rtstruct_organs_are_rasterised_with_tg263_names_types_and_colours(patient, ct) -> None:
    organs = organs_from_rtstruct(patient.rtstruct, ct)
    assert [o.name.name for o in organs] == ["External", "Liver", "Spleen", "Kidney_L", "Kidney_R"]
    assert [o.name.source for o in organs] == ["BODY", "LIVER", "SPLEEN", "KIDNEY_L", "KIDNEY_R"]
    assert organs[0].interpreted_type == "EXTERNAL" and organs[2].color == (255, 128, 0)
    for organ in organs:
        truth = patient.fields[organ.name.source] < 0
        assert 2 * (organ.mask & truth).sum() / (organ.mask.sum() + truth.sum()) > 0.97
        assert organ.contours and organ.off_slice == 0
    chosen = organs_from_rtstruct(patient.rtstruct, ct, ["spleen", "Kidney_L"])
    assert [o.name.name for o in chosen] == ["Spleen", "Kidney_L"]


def test_structure_set_of_another_frame_of_reference_is_refused(patient, ct, tmp_path: Path) -> None:
    def other_frame(ds):
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4"
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = "1.2.3.4"

    path = _edited_rtstruct(patient, tmp_path / "RS_other_frame.dcm", other_frame)
    with pytest.raises(GeometryInputError) as raised:
        organs_from_rtstruct(path, ct)
    message = str(raised.value)
    assert message.startswith("RTSTRUCT RS_other_frame.dcm does not reference the CT")
    assert (
        "frame of reference 1.2.3.4" in message and ct.series_instance_uid in message and "\n" not in message
    )


def test_structure_set_of_another_series_is_refused(patient, ct, tmp_path: Path) -> None:
    other = generate_uid()

    def other_series(ds):
        study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
        study.RTReferencedSeriesSequence[0].SeriesInstanceUID = other

    path = _edited_rtstruct(patient, tmp_path / "RS_other_series.dcm", other_series)
    with pytest.raises(GeometryInputError, match=f"does not reference the CT: it references series {other}"):
        organs_from_rtstruct(path, ct)


def test_organ_without_contours_is_refused(patient, ct, tmp_path: Path) -> None:
    def empty_liver(ds):
        del ds.ROIContourSequence[1].ContourSequence

    path = _edited_rtstruct(patient, tmp_path / "RS_empty.dcm", empty_liver)
    with pytest.raises(GeometryInputError) as raised:
        organs_from_rtstruct(path, ct)
    assert str(raised.value) == (
        "ROI 'LIVER' in RTSTRUCT RS_empty.dcm has no contours; delineate it, or leave it out by naming the "
        "organs to use with --roi"
    )
    assert [o.name.name for o in organs_from_rtstruct(path, ct, ["SPLEEN"])] == ["Spleen"]


def test_absent_roi_and_non_rtstruct_files_are_refused(patient, ct) -> None:
    with pytest.raises(
        GeometryInputError, match=r"ROI 'PROSTATE' absent from RTSTRUCT RS.dcm \(ROIs: BODY, LIVER"
    ):
        organs_from_rtstruct(patient.rtstruct, ct, ["PROSTATE"])
    with pytest.raises(GeometryInputError, match="is not an RT Structure Set"):
        organs_from_rtstruct(sorted(patient.ct_dir.iterdir())[0], ct)


def test_label_image_on_the_ct_grid(patient, ct, tmp_path: Path) -> None:
    labels = np.zeros(ct.volume.geometry.shape, dtype=np.uint8)
    labels[patient.fields["SPLEEN"] < 0] = 1
    labels[patient.fields["LIVER"] < 0] = 2
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(labels, ct.volume.geometry.affine_ras), path)
    organs = organs_from_labels(path, ct, {1: "SPLEEN", 2: "LIVER"})
    assert [(o.name.name, int(o.mask.sum())) for o in organs] == [
        ("Spleen", int((labels == 1).sum())),
        ("Liver", int((labels == 2).sum())),
    ]
    with pytest.raises(GeometryInputError, match=r"holds value\(s\) 2 without a name; pass --label-names"):
        organs_from_labels(path, ct, {1: "SPLEEN"})
    with pytest.raises(GeometryInputError, match=r"label 3 \(PANCREAS\) has no voxels in mask.nii.gz"):
        organs_from_labels(path, ct, {1: "SPLEEN", 2: "LIVER", 3: "PANCREAS"})
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(labels, ct.volume.geometry.affine_ras + _shift(5.0)), shifted)
    with pytest.raises(GeometryInputError, match=r"is not the CT's .*must lie on the CT grid"):
        organs_from_labels(shifted, ct, {1: "SPLEEN", 2: "LIVER"})


def _shift(mm: float) -> np.ndarray:
    shift = np.zeros((4, 4))
    shift[0, 3] = mm
    return shift


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1=SPLEEN", {1: "SPLEEN"}), ("1=Spleen, 2=Kidney Left", {1: "Spleen", 2: "Kidney Left"})],
)
def test_label_names_parse(text: str, expected: dict) -> None:
    assert parse_label_names(text) == expected


@pytest.mark.parametrize("text", ["SPLEEN", "0=BG", "1=", ""])
def test_bad_label_names_are_refused(text: str) -> None:
    with pytest.raises(GeometryInputError, match="--label-names"):
        parse_label_names(text)


def test_rtplan_isocentres_in_the_ct_frame(patient, ct, tmp_path: Path) -> None:
    plan = write_rtplan(
        tmp_path / "RP.dcm",
        ct.volume.frame_of_reference_uid,
        [(10.0, 20.0, 0.0), (10.0, 20.0, 0.0), (0, 0, 50)],
    )
    isocentres = read_isocentres(plan, ct)
    assert [(i.beams, i.position) for i in isocentres] == [
        (("B1", "B2"), (10.0, 20.0, 0.0)),
        (("B3",), (0.0, 0.0, 50.0)),
    ]
    other = write_rtplan(tmp_path / "RP_other.dcm", "1.2.3", [(0, 0, 0)])
    with pytest.raises(
        GeometryInputError, match=r"RTPLAN RP_other\.dcm is in frame of reference 1\.2\.3, not the CT's"
    ):
        read_isocentres(other, ct)


def test_ct_folder_problems_are_named(tmp_path: Path, patient) -> None:
    with pytest.raises(GeometryInputError, match="does not exist or is not a folder"):
        load_ct(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeometryInputError, match="no CT image series in"):
        load_ct(tmp_path / "empty")
    with pytest.raises(GeometryInputError, match=r"no CT series 1\.2\.3 in"):
        load_ct(patient.ct_dir, series_uid="1.2.3")
