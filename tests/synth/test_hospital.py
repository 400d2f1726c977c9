"""Synthetic multi-site DICOM: valid CT + RTSTRUCT, realistic site differences, exact round trip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom import dcmread
from scipy.ndimage import binary_erosion

from dose3d_fl.cli import main
from dose3d_fl.data.discovery import discover_dicom
from dose3d_fl.data.ingest import ingest_site
from dose3d_fl.data.rtstruct import RT_STRUCTURE_SET_STORAGE, read_structure_set
from dose3d_fl.synth.hospital import (
    PHI_MARKER,
    SyntheticPatient,
    patient_identity,
    patients_per_site,
    synthesize_federation,
    synthesize_patient,
    write_study,
)
from dose3d_fl.synth.scanner import SITE_SCANNERS
from tests.data.dicom_builders import dice

PATIENTS = (2, 1, 1)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize_federation(out, PATIENTS, seed=0, workers=2)
    return out


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(federation: Path, tmp_path: Path) -> None:
    synthesize_federation(tmp_path / "again", PATIENTS, seed=0, workers=1)
    assert _digests(tmp_path / "again") == _digests(federation)
    synthesize_federation(tmp_path / "other", (1,), seed=1, workers=1)
    other = _digests(tmp_path / "other" / "site-1")
    same_site = _digests(federation / "site-1")
    assert set(other.values()).isdisjoint(same_site.values())


def test_each_site_has_its_patients_and_one_volume_each(federation: Path) -> None:
    for site, count in enumerate(PATIENTS, start=1):
        inventory = discover_dicom(federation / f"site-{site}")
        volumes = [s for s in inventory.image_series.values() if len(s.files) > 1]
        scouts = [s for s in inventory.image_series.values() if "LOCALIZER" in s.headers[0].ImageType]
        assert len(volumes) == count
        assert len(scouts) == (count if SITE_SCANNERS[site - 1].layout == "pacs" else 0)
        assert len(inventory.structure_sets) == count
        assert not inventory.unreadable


def test_ingest_accepts_every_patient_and_refuses_the_scouts(federation: Path, tmp_path: Path) -> None:
    report = ingest_site(federation / "site-3", tmp_path / "cache")
    assert len(report.manifest.cases) == PATIENTS[2]
    assert len(report.manifest.rejected) == PATIENTS[2]
    assert all("LOCALIZER" in r.reason and "not a 3D volume" in r.reason for r in report.manifest.rejected)
    assert report.manifest.skipped_non_dicom == 1  # the export log


@pytest.mark.parametrize("site", [1, 2, 3])
def test_ct_series_tags(federation: Path, site: int) -> None:
    inventory = discover_dicom(federation / f"site-{site}")
    scanner = SITE_SCANNERS[site - 1]
    uids = set()
    for series in inventory.image_series.values():
        headers = series.headers
        if "LOCALIZER" in headers[0].ImageType:
            continue
        assert {h.SOPClassUID for h in headers} == {"1.2.840.10008.5.1.4.1.1.2"}
        assert {h.Modality for h in headers} == {"CT"}
        assert {(h.BitsAllocated, h.PixelRepresentation) for h in headers} == {(16, 1)}
        assert {float(h.RescaleIntercept) for h in headers} == {scanner.rescale_intercept}
        assert {float(h.RescaleSlope) for h in headers} == {1.0}
        assert {tuple(float(v) for v in h.PixelSpacing) for h in headers} == {(scanner.pixel_spacing,) * 2}
        assert {float(h.SliceThickness) for h in headers} == {scanner.slice_thickness}
        assert {(h.Rows, h.Columns) for h in headers} == {(scanner.matrix, scanner.matrix)}
        assert len({h.FrameOfReferenceUID for h in headers}) == 1
        orientation = np.array(headers[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        heights = np.sort([np.asarray(h.ImagePositionPatient, dtype=float) @ normal for h in headers])
        np.testing.assert_allclose(np.diff(heights), scanner.slice_thickness, atol=1e-3)
        uids.update(h.SOPInstanceUID for h in headers)
        pixels = dcmread(series.files[0]).pixel_array
        assert pixels.dtype == np.int16 and pixels.shape == (scanner.matrix, scanner.matrix)
    assert len(uids) == sum(len(s.files) for s in inventory.image_series.values() if len(s.files) > 1)


@pytest.mark.parametrize("site", [1, 2, 3])
def test_rtstruct_references_its_ct_with_body_and_spleen(federation: Path, site: int) -> None:
    inventory = discover_dicom(federation / f"site-{site}")
    for _, ds in inventory.structure_sets:
        assert ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE
        structure_set = read_structure_set(ds)
        (series_uid,) = structure_set.referenced_series_uids
        series = inventory.image_series[series_uid]
        assert structure_set.frame_of_reference_uids == {series.headers[0].FrameOfReferenceUID}
        assert structure_set.referenced_sop_instance_uids <= {h.SOPInstanceUID for h in series.headers}
        assert set(structure_set.rois) == {"BODY", "SPLEEN"}
        assert all(len(structure_set.rois[name].contours) >= 3 for name in ("BODY", "SPLEEN"))
        geometric_types = {
            c.ContourGeometricType for roi in ds.ROIContourSequence for c in roi.ContourSequence
        }
        assert geometric_types == {"CLOSED_PLANAR"}


def test_identifying_attributes_carry_the_marker(federation: Path) -> None:
    for path in federation.rglob("*"):
        if not path.is_file() or path.name == "EXPORT.TXT":
            continue
        ds = dcmread(path, stop_before_pixels=True)
        for keyword in (
            "PatientName",
            "PatientID",
            "AccessionNumber",
            "StudyID",
            "InstitutionName",
            "ReferringPhysicianName",
        ):
            assert PHI_MARKER in str(ds.get(keyword, "")), (path, keyword)


@pytest.fixture(scope="module")
def one_patient_per_scanner() -> list[SyntheticPatient]:
    return [
        synthesize_patient(np.random.default_rng([7, site]), scanner)
        for site, scanner in enumerate(SITE_SCANNERS)
    ]


def test_sites_differ_like_real_scanners(one_patient_per_scanner: list[SyntheticPatient]) -> None:
    noise, offset = [], []
    for patient in one_patient_per_scanner:
        # Deep inside the liver the anatomy is nearly uniform: what varies there is scanner noise.
        liver_core = binary_erosion(patient.fields["LIVER"] < 0, iterations=3)
        noise.append(float(np.std(patient.hu[liver_core])))
        air = patient.fields["BODY"] > 30.0
        offset.append(float(np.median(patient.hu[air])) + 1000.0)
    assert noise[0] < noise[1] < noise[2]
    np.testing.assert_allclose(offset, [s.hu_offset for s in SITE_SCANNERS], atol=2.0)
    assert len({s.field_of_view for s in SITE_SCANNERS}) == 3
    assert len({s.slice_thickness for s in SITE_SCANNERS}) == 3
    assert len({s.pixel_spacing for s in SITE_SCANNERS}) == 3
    assert len({patient.geometry.shape for patient in one_patient_per_scanner}) == 3


@pytest.mark.parametrize("site", [1, 2, 3])
def test_synth_ingest_round_trip_reproduces_ground_truth(
    tmp_path: Path, site: int, one_patient_per_scanner: list[SyntheticPatient]
) -> None:
    scanner = SITE_SCANNERS[site - 1]
    patient = one_patient_per_scanner[site - 1]
    identity = patient_identity(7, site, 1, scanner, np.random.default_rng(site))
    write_study(patient, identity, scanner, tmp_path / "in", ["round-trip", str(site)], "P001")

    report = ingest_site(tmp_path / "in", tmp_path / "cache")
    (case,) = report.manifest.cases
    label = np.asarray(nib.load(tmp_path / "cache" / case.label).dataobj) > 0
    image = np.asarray(nib.load(tmp_path / "cache" / case.image).dataobj)
    # The generator's grid is ascending along the slice normal, as ingestion orders it.
    assert label.shape == patient.spleen_mask.shape
    assert dice(label, patient.spleen_mask) >= 0.97
    stored = np.rint(patient.hu - scanner.rescale_intercept)  # what the CT writer stores, then rescales back
    np.testing.assert_array_equal(image, stored + scanner.rescale_intercept)
    np.testing.assert_allclose(
        nib.load(tmp_path / "cache" / case.image).affine, patient.geometry.affine_ras, atol=1e-3
    )


def test_cli_synth_checks_patient_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path), "--sites", "3", "--patients", "1,2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dose3d: error:") and "\n" not in err


def test_patients_per_site_cycles_the_defaults_or_spreads_one_count():
    assert patients_per_site(5) == [12, 8, 5, 12, 8]
    assert patients_per_site(3, [2]) == [2, 2, 2]
    assert patients_per_site(2, [4, 1]) == [4, 1]
    with pytest.raises(ValueError, match="2 patient counts for 3 sites"):
        patients_per_site(3, [4, 1])
