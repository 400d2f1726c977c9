"""The RTSTRUCT and DICOM SEG that ``dose3d segment`` writes, on a small real CT series (no trained model).

Every file is checked by the DICOM IOD validator ``dciodvfy`` (no error) and the RTSTRUCT is read back by an
independent reader (rt-utils). Each test names the defect it guards against: no SpecificCharacterSet, a
non-ASCII patient name mangled, Type 2 attributes left out, an empty ContourSequence, no model identity.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread
from pydicom.sequence import Sequence

from dose3d_fl import __version__
from dose3d_fl.clinical.models import ModelRecord, model_record
from dose3d_fl.clinical.provenance import task_of, weights_sha256
from dose3d_fl.clinical.seg_export import build_segmentation
from dose3d_fl.clinical.segment import organ_colors
from dose3d_fl.clinical.structure_export import (
    NoOrganFoundError,
    PredictedOrgan,
    build_predicted_structure_set,
)
from dose3d_fl.data.ct_input import InputSeries, load_input_series
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile
from tests.clinical.dicom_checks import assert_valid_dicom, dciodvfy, raw_text, rt_utils_masks
from tests.data.dicom_builders import Study, axial_geometry, dice, make_study

JOB_ID = "0f6c2a4e-9d1b-4c57-8e3a-2b7d5f1e9a40"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelRecord:
    """A server global model file as the persistor writes it (real cpu-small weights)."""
    profile = get_profile("cpu-small")
    weights = build_network(profile).state_dict()
    data = {
        "model": weights,
        "profile": profile.to_dict(),
        "provenance": {
            "profile": profile.name,
            "task": task_of(profile),
            "job_id": JOB_ID,
            "job_name": "seg_fedavg",
            "round": 25,
            "sha256": weights_sha256(weights),
            "created": "2025-01-02T03:04:05+00:00",
            "software": f"dose3d-fl {__version__}",
        },
    }
    path = tmp_path_factory.mktemp("model") / "FL_global_model.pt"
    torch.save(data, path)
    return model_record(path, torch.load(path, weights_only=True))


def _series(folder: Path, study: Study | None = None, **attributes: str | None) -> tuple[InputSeries, Study]:
    """A CT series (no structure set beside it) with some attributes set (a string) or removed (None)."""
    study = study or make_study()
    study.rtstruct = None
    for ds in study.ct:
        for keyword, value in attributes.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    study.write(folder)
    return load_input_series(folder), study


def _second_organ(shape: tuple[int, int, int]) -> np.ndarray:
    """A box beside the ellipsoid organ."""
    mask = np.zeros(shape, dtype=bool)
    mask[2:12, 4:16, 3:15] = True
    return mask


def _organs(study: Study) -> list[PredictedOrgan]:
    names = ["SPLEEN", "Wątroba"]  # the second: a local (Polish) name, not ASCII
    masks = [study.truth, _second_organ(study.truth.shape) & ~study.truth]
    return [PredictedOrgan(n, c, m) for n, c, m in zip(names, organ_colors(names), masks, strict=True)]


def _write(series: InputSeries, organs: list[PredictedOrgan], model: ModelRecord, path: Path) -> Path:
    build_predicted_structure_set(series, organs, model).save_as(path, enforce_file_format=True)
    return path


def test_one_structure_set_holds_every_organ_and_an_independent_reader_agrees(
    tmp_path: Path, model: ModelRecord
) -> None:
    # rt-utils 1.2.7 reads square images with square pixels only (it swaps rows and columns, and the two
    # pixel spacings), so this series has them.
    series, study = _series(tmp_path / "ct", make_study(axial_geometry((48, 48, 24), (3.0, 3.0, 4.0))))
    organs = _organs(study)
    path = _write(series, organs, model, tmp_path / "rtstruct.dcm")
    assert_valid_dicom(path)

    ds = dcmread(path)
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == ["SPLEEN", "Wątroba"]
    colours = [tuple(item.ROIDisplayColor) for item in ds.ROIContourSequence]
    assert colours[0] == (255, 128, 0) and len(set(colours)) == 2
    assert {o.RTROIInterpretedType for o in ds.RTROIObservationsSequence} == {"ORGAN"}
    assert {roi.ROIGenerationAlgorithm for roi in ds.StructureSetROISequence} == {"AUTOMATIC"}
    assert ds.ApprovalStatus == "UNAPPROVED"

    theirs = rt_utils_masks(tmp_path / "ct", path, series.volume.sop_instance_uids)
    assert set(theirs) == {"SPLEEN", "Wątroba"}
    for organ in organs:
        score = dice(theirs[organ.name], organ.mask)
        print(f"{organ.name}: rt-utils Dice {score:.4f}")
        assert score > 0.9


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 192", "Wałęsa^Łukasz"), ("ISO_IR 100", "Müller^Hans"), (None, "Muller^Hans")],
)
def test_patient_names_survive_in_the_declared_character_set(
    tmp_path: Path, model: ModelRecord, charset: str | None, name: str
) -> None:
    """Defects: no SpecificCharacterSet written; a non-ASCII name comes back mangled ("Wa??sa")."""
    series, study = _series(tmp_path / "ct", SpecificCharacterSet=charset, PatientName=name)
    path = _write(series, _organs(study)[:1], model, tmp_path / "rtstruct.dcm")
    assert_valid_dicom(path)
    ds = dcmread(path)
    assert "SpecificCharacterSet" in ds
    assert str(ds.PatientName) == name == str(dcmread(series.volume.files[0]).PatientName)
    if name.isascii():
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert raw_text(path, "PatientName") == name.encode("ascii")
    else:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert raw_text(path, "PatientName").decode("utf-8") == name  # valid UTF-8, the declared set


def test_seg_keeps_a_non_ascii_name_and_is_valid(tmp_path: Path, model: ModelRecord) -> None:
    series, study = _series(tmp_path / "ct", SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Hans")
    path = tmp_path / "seg.dcm"
    organs = _organs(study)
    build_segmentation(series, organs, model).save_as(path)
    assert_valid_dicom(path)
    ds = dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Hans"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["SPLEEN", "Wątroba"]
    slice_of = {uid: k for k, uid in enumerate(series.volume.sop_instance_uids)}
    frames = ds.pixel_array.reshape(-1, *study.truth.shape[1::-1]) > 0
    rebuilt = [np.zeros_like(study.truth) for _ in organs]
    for frame, item in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        rebuilt[segment - 1][:, :, slice_of[uid]] = frame.T
    for organ, mask in zip(organs, rebuilt, strict=True):
        assert np.array_equal(mask, organ.mask)
    # The same model identity as the RTSTRUCT.
    assert ds.Manufacturer == "dose3d-fl" and ds.SoftwareVersions == __version__
    assert ds.DeviceSerialNumber == model.sha256
    assert ds.SeriesDescription == f"dose3d-fl {model.sha256[:12]} seg_fedavg round 25"
    algorithm = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "dose3d-fl" and model.sha256 in algorithm.AlgorithmParameters


def test_type_2_attributes_are_present_and_empty_when_the_ct_lacks_them(
    tmp_path: Path, model: ModelRecord
) -> None:
    """Defect: OperatorsName and the Type 2 patient/study attributes left out (dciodvfy: Error)."""
    missing = ("ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex")
    series, study = _series(tmp_path / "ct", **dict.fromkeys(missing))
    path = _write(series, _organs(study)[:1], model, tmp_path / "rtstruct.dcm")
    assert_valid_dicom(path)
    ds = dcmread(path)
    for keyword in (*missing, "OperatorsName", "PositionReferenceIndicator", "StudyDate", "StudyTime"):
        assert keyword in ds, keyword
    for keyword in (*missing, "OperatorsName"):
        assert ds[keyword].value in ("", None), keyword
    assert ds.StudyInstanceUID == study.ct[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == study.ct[0].FrameOfReferenceUID


def test_an_organ_not_found_is_left_out_and_no_organ_means_no_structure_set(
    tmp_path: Path, model: ModelRecord, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect: an empty ContourSequence for an organ the model did not find (dciodvfy: Error)."""
    series, study = _series(tmp_path / "ct")
    found, missed = _organs(study)
    missed = PredictedOrgan(missed.name, missed.color, np.zeros_like(missed.mask))
    with caplog.at_level(logging.WARNING):
        path = _write(series, [missed, found], model, tmp_path / "rtstruct.dcm")
    assert "Wątroba: not found by the model, left out" in caplog.text
    assert_valid_dicom(path)
    ds = dcmread(path)
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == ["SPLEEN"]
    assert all(len(item.ContourSequence) > 0 for item in ds.ROIContourSequence)
    with pytest.raises(NoOrganFoundError, match="found none of its organs"):
        build_predicted_structure_set(series, [missed], model)
    with pytest.raises(NoOrganFoundError):
        build_segmentation(series, [missed], model)


def test_the_structure_set_names_the_model(tmp_path: Path, model: ModelRecord) -> None:
    """Defect: nothing in the file says which model made the contours."""
    series, study = _series(tmp_path / "ct")
    ds = dcmread(_write(series, _organs(study)[:1], model, tmp_path / "rtstruct.dcm"))
    assert ds.Manufacturer == "dose3d-fl"
    assert ds.ManufacturerModelName == "dose3d-fl segmentation cpu-small"
    assert ds.SoftwareVersions == __version__
    assert ds.DeviceSerialNumber == model.sha256 and len(model.sha256) == 64
    assert ds.SeriesDescription == f"dose3d-fl {model.sha256[:12]} seg_fedavg round 25"
    for text in (model.sha256, JOB_ID, "global round 25", "profile cpu-small"):
        assert text in ds.StructureSetDescription
    assert ds.StructureSetROISequence[0].ROIGenerationDescription == f"dose3d-fl model {model.sha256[:12]}"


def test_the_validator_catches_each_defect_of_the_old_writer(tmp_path: Path, model: ModelRecord) -> None:
    """The checks above have teeth: each defect the old writer had, put back into a good file, is an error."""
    series, study = _series(tmp_path / "ct", SpecificCharacterSet="ISO_IR 192", PatientName="Wałęsa^Łukasz")
    good = dcmread(_write(series, _organs(study)[:1], model, tmp_path / "good.dcm"))

    def errors_after(change: str) -> list[str]:
        ds = copy.deepcopy(good)
        if change == "no SpecificCharacterSet":
            del ds.SpecificCharacterSet
            ds.PatientName = ds.PatientName.original_string  # the UTF-8 bytes, undeclared
        elif change == "no OperatorsName":
            del ds.OperatorsName
        elif change == "empty ContourSequence":
            ds.ROIContourSequence[0].ContourSequence = Sequence()
        path = tmp_path / f"{change}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return dciodvfy(path).errors

    assert any("invalid for character repertoire" in e for e in errors_after("no SpecificCharacterSet"))
    assert any("OperatorsName" in e for e in errors_after("no OperatorsName"))
    assert any("ContourSequence" in e for e in errors_after("empty ContourSequence"))
