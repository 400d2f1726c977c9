"""What discovery does with exports as they come from clinics (issue #23): a study exported twice, files
without the DICOM preamble, RT plans, doses, reports and other objects that hold no image volume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dose3d_fl.cli import main
from dose3d_fl.data.ct_input import load_input_series
from dose3d_fl.data.discovery import discover_dicom
from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.summary import format_summary_table, summarise_caches
from tests.data.dicom_builders import (
    SMALL,
    accepted_sources,
    dice,
    ingest_manifest,
    load_case,
    make_study,
    rejection_for,
    series_uid,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"

# --- a study exported twice -------------------------------------------------------------------------------


def test_study_exported_twice_is_one_case_and_the_copies_are_counted(tmp_path: Path) -> None:
    study = make_study(SMALL)
    study.write(tmp_path / "in" / "export-1")
    study.write(tmp_path / "in" / "export-2", ct_names="IM{k:05d}")  # other names, same instances

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert not manifest.rejected
    assert accepted_sources(manifest) == ["export-1/RS.dcm"]
    assert manifest.duplicate_files == len(study.ct) + 1  # every slice and the structure set
    assert manifest.cases[0].source == "export-1"
    _, label, _ = load_case(tmp_path / "cache", manifest.cases[0])
    assert dice(label, study.truth) >= 0.97


def test_two_images_with_one_uid_but_different_positions_are_refused(tmp_path: Path) -> None:
    study = make_study(SMALL)
    study.write(tmp_path / "in" / "a")
    clash = study.ct[4]
    clash.ImagePositionPatient = [float(v) + 1.0 for v in clash.ImagePositionPatient]
    clash.save_as(tmp_path / "in" / "z-clash.dcm", enforce_file_format=True)

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert not manifest.cases and manifest.duplicate_files == 0
    reason = rejection_for(manifest, "a/RS.dcm").reason
    assert f"series {series_uid(study)}: file z-clash.dcm: SOPInstanceUID" in reason
    assert "also in CT004.dcm with a different header (two images, one UID)" in reason


# --- files without the DICOM preamble ---------------------------------------------------------------------


def _without_preamble(path: Path) -> None:
    """Drop the 128-byte preamble and "DICM": the file meta group starts the file."""
    path.write_bytes(path.read_bytes()[132:])


def _raw_dataset(path: Path) -> None:
    """Rewrite as a bare dataset (implicit VR little endian), no preamble and no file meta, as old
    archives and some scripts write them."""
    ds = dcmread(path)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    "rewrite", [_without_preamble, _raw_dataset], ids=["meta-no-preamble", "raw-dataset"]
)
def test_files_without_preamble_are_read_and_counted(tmp_path: Path, rewrite) -> None:
    study = make_study(SMALL).write(tmp_path / "in")
    reference = ingest_manifest(tmp_path / "in", tmp_path / "reference")
    for path in study.files:
        rewrite(path)
    with pytest.raises(pydicom.errors.InvalidDicomError, match="Use force=True"):
        dcmread(study.files[0])

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert not manifest.rejected
    assert manifest.read_without_preamble == len(study.files)
    image, label, affine = load_case(tmp_path / "cache", manifest.cases[0])
    ref_image, ref_label, ref_affine = load_case(tmp_path / "reference", reference.cases[0])
    np.testing.assert_array_equal(image, ref_image)
    np.testing.assert_array_equal(label, ref_label)
    np.testing.assert_array_equal(affine, ref_affine)
    # dose3d segment and geometry read their CT through the same reader.
    assert load_input_series(tmp_path / "in").volume.geometry.shape == SMALL.shape


def test_unidentifiable_file_without_preamble_is_rejected_at_discovery(tmp_path: Path) -> None:
    make_study(SMALL).write(tmp_path / "in" / "good")
    stray = make_study(SMALL, seed=3).ct[0]
    del stray.SOPClassUID
    stray.save_as(tmp_path / "in" / "stray.dcm", enforce_file_format=False)
    _raw_dataset(tmp_path / "in" / "stray.dcm")

    inventory = discover_dicom(tmp_path / "in")
    assert [path.name for path, _ in inventory.unreadable] == ["stray.dcm"]
    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    assert accepted_sources(manifest) == ["good/RS.dcm"]
    assert rejection_for(manifest, "stray.dcm").reason == (
        "no DICOM preamble or 'DICM' prefix and no SOPClassUID: the object cannot be identified; "
        "re-export it as a DICOM Part 10 file"
    )
    assert manifest.skipped_non_dicom == 0


# --- objects that hold no image volume --------------------------------------------------------------------


def _minimal_object(folder: Path, name: str, sop_class: str, modality: str, **extra: object) -> None:
    """A small DICOM object of another IOD (presentation state, RT image) referencing no CT."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.save_as(folder / name, enforce_file_format=True)


def _plan_dose_and_friends(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("rtdose.dcm", "rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm", "ExplVR_LitEndNoMeta.dcm"):
        shutil.copy(TEST_FILES / name, folder / name)
    _minimal_object(folder, "pr.dcm", "1.2.840.10008.5.1.4.1.1.11.1", "PR")
    # An RT Image (a portal image) has pixels and an "Image Storage" SOP class, but is no patient volume.
    rt_image = dcmread(TEST_FILES / "CT_small.dcm")
    rt_image.SOPClassUID = rt_image.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.1"
    rt_image.Modality = "RTIMAGE"
    rt_image.save_as(folder / "rtimage.dcm", enforce_file_format=True)


def test_plans_doses_and_other_objects_are_counted_by_modality_not_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_study(SMALL).write(tmp_path / "in" / "P001")
    _plan_dose_and_friends(tmp_path / "in" / "P001" / "plan")
    cache = tmp_path / "cache"

    assert main(["ingest", "--input", str(tmp_path / "in"), "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    manifest = Manifest.load(cache)
    assert accepted_sources(manifest) == ["P001/RS.dcm"]
    assert not manifest.rejected
    assert manifest.ignored_dicom_objects == {
        "ECG": 1,
        "PR": 1,
        "RTDOSE": 1,
        "RTIMAGE": 1,
        "RTPLAN": 2,  # rtplan.dcm and the ion plan written without preamble
        "SR": 1,
    }
    assert manifest.read_without_preamble == 1
    notes = "ignored DICOM objects without an image volume: ECG 1, PR 1, RTDOSE 1, RTIMAGE 1, RTPLAN 2, SR 1"
    assert notes in out
    assert f"cache: {notes}; 1 file(s) read without DICOM preamble" in format_summary_table(
        summarise_caches([cache])
    )


def test_duplicates_show_in_the_summary(tmp_path: Path) -> None:
    study = make_study(SMALL)
    study.write(tmp_path / "in" / "a")
    study.write(tmp_path / "in" / "b")
    ingest_site(tmp_path / "in", tmp_path / "cache")
    table = format_summary_table(summarise_caches([tmp_path / "cache"]))
    assert table.splitlines()[-1] == f"cache: {len(study.files)} duplicate file(s) not used"


def test_a_manifest_written_before_these_counts_still_loads(tmp_path: Path) -> None:
    make_study(SMALL).write(tmp_path / "in")
    ingest_site(tmp_path / "in", tmp_path / "cache")
    path = tmp_path / "cache" / "manifest.json"
    data = json.loads(path.read_text())
    for key in ("duplicate_files", "read_without_preamble", "allow_automatic_labels"):
        del data[key]
    for case in data["cases"]:
        for key in ("structure_set_choice", "set_aside", "flags"):
            del case[key]
    data["ignored_dicom_objects"] = 3
    path.write_text(json.dumps(data))

    manifest = Manifest.load(tmp_path / "cache")
    assert manifest.ignored_dicom_objects == {"unspecified": 3}
    assert manifest.cases[0].flags == [] and manifest.cases[0].set_aside == []
    assert "cache: ignored DICOM objects without an image volume: unspecified 3" in format_summary_table(
        summarise_caches([tmp_path / "cache"])
    )
