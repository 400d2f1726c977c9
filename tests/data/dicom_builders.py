"""Small, fast DICOM studies for ingestion tests: an ellipsoid "organ" in a box of fat, on any grid.

They are written with the project's real CT and RTSTRUCT writers and read back by the real ingestion, so
each test can break one rule at a time (drop a slice, tilt the stack, change a tag) and check the reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from dose3d_fl.data.contours import polygons_from_field
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.ingest import IngestConfig, IngestError, ingest_site
from dose3d_fl.data.manifest import CaseEntry, Manifest, Rejection
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from dose3d_fl.synth.ct_writer import CTSeriesSpec, StudyIdentity, build_ct_slices

CENTRE = np.array([10.0, -5.0, 0.0])
SEMI_AXES = np.array([40.0, 25.0, 30.0])


def organ_field(points: np.ndarray, semi_axes: np.ndarray = SEMI_AXES) -> np.ndarray:
    """Roughly signed distance (mm) to an ellipsoid organ; negative inside."""
    radius = np.sqrt((((points - CENTRE) / semi_axes) ** 2).sum(axis=-1))
    return (radius - 1.0) * semi_axes.min()


def as_physician_delineation(
    rtstruct: FileDataset, approval: str | None = None, manufacturer: str = "TEST TPS"
) -> FileDataset:
    """Mark a structure set written by the project's writer as a person's work in a planning system.

    The writer marks what it writes as dose3d's automatic output (Manufacturer ``dose3d-fl``, ROIs
    ``AUTOMATIC``), which ingestion refuses as ground truth. ``approval`` adds the RT Approval module.
    """
    rtstruct.Manufacturer = manufacturer
    for roi in rtstruct.StructureSetROISequence:
        roi.ROIGenerationAlgorithm = "MANUAL"
    if approval is not None:
        rtstruct.ApprovalStatus = approval
        if approval != "UNAPPROVED":
            rtstruct.ReviewDate, rtstruct.ReviewTime = rtstruct.StructureSetDate, rtstruct.StructureSetTime
            rtstruct.ReviewerName = "SYNTHPHI^REVIEWER"
    return rtstruct


def axial_geometry(
    shape: tuple[int, int, int] = (48, 40, 24),
    spacing: tuple[float, float, float] = (3.0, 3.5, 4.0),
    orientation: tuple[tuple[float, ...], tuple[float, ...]] = ((1, 0, 0), (0, 1, 0)),
) -> VolumeGeometry:
    """A grid centred on the organ with the given ImageOrientationPatient."""
    row_dir, col_dir = (np.asarray(v, dtype=float) for v in orientation)
    normal = np.cross(row_dir, col_dir)
    half = (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    origin = -half[0] * row_dir - half[1] * col_dir - half[2] * normal + np.array([3.0, -2.0, 1.0])
    return VolumeGeometry(
        shape=shape,
        row_direction=tuple(row_dir),
        column_direction=tuple(col_dir),
        slice_direction=tuple(normal),
        spacing=spacing,
        origin=tuple(origin),
    )


@dataclass
class Study:
    """An in-memory study: CT slices and an RTSTRUCT, editable before writing."""

    geometry: VolumeGeometry
    ct: list[FileDataset]
    rtstruct: FileDataset
    truth: np.ndarray
    files: list[Path] = field(default_factory=list)

    def write(self, folder: Path, ct_names: str = "CT{k:03d}.dcm", rtstruct_name: str = "RS.dcm") -> Study:
        """Save every dataset under ``folder`` (created)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.files = []
        for k, ds in enumerate(self.ct):
            path = folder / ct_names.format(k=k, uid=ds.SOPInstanceUID)
            ds.save_as(path, enforce_file_format=True)
            self.files.append(path)
        if self.rtstruct is not None:
            path = folder / rtstruct_name
            self.rtstruct.save_as(path, enforce_file_format=True)
            self.files.append(path)
        return self


def make_study(
    geometry: VolumeGeometry | None = None,
    roi_name: str = "SPLEEN",
    seed: int = 0,
    instance_numbers: list[int] | None = None,
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    organ_scale: float = 1.0,
) -> Study:
    """Build a CT series with an ellipsoid organ (+45 HU in -100 HU fat) and a physician's RTSTRUCT.

    ``organ_scale`` multiplies the organ's semi-axes.
    """
    geometry = geometry or axial_geometry()
    rng = np.random.default_rng(seed)
    field_ = organ_field(geometry.voxel_points(), SEMI_AXES * organ_scale)
    hu = np.where(field_ < 0, 45.0, -100.0) + rng.normal(0, 5, geometry.shape)
    slices = geometry.shape[2]
    identity = StudyIdentity(
        patient_name="SYNTHPHI^TEST",
        patient_id="SYNTHPHI-T-001",
        patient_birth_date="19700101",
        patient_sex="F",
        study_instance_uid=generate_uid(),
        study_id="SYNTHPHI1",
        accession_number="SYNTHPHI0001",
        study_date=dt.date(2024, 1, 2),
        institution_name="SYNTHPHI Test Hospital",
        referring_physician_name="SYNTHPHI^REF",
        station_name="SYNTHPHICT",
        manufacturer="test",
        model_name="test",
    )
    spec = CTSeriesSpec(
        series_instance_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        sop_instance_uids=tuple(generate_uid() for _ in range(slices)),
        instance_numbers=tuple(instance_numbers or range(1, slices + 1)),
        rescale_intercept=rescale_intercept,
        rescale_slope=rescale_slope,
    )
    ct = build_ct_slices(hu.astype(np.float32), geometry, identity, spec)
    polygons = {
        k: polygons_from_field(field_[:, :, k].T) for k in range(slices) if (field_[:, :, k] < 0).any()
    }
    rtstruct = build_rtstruct(
        ct[0],
        spec.sop_instance_uids,
        geometry,
        [RoiContours(roi_name, (255, 128, 0), "ORGAN", polygons)],
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
    )
    as_physician_delineation(rtstruct)
    return Study(geometry=geometry, ct=ct, rtstruct=rtstruct, truth=field_ < 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


# A coarse grid (12 slices of 24 x 20 voxels) around the whole organ: fast, and still a real 3D series.
SMALL = axial_geometry(shape=(24, 20, 12), spacing=(6.0, 7.0, 8.0))


def ingest_manifest(input_dir: Path, cache_dir: Path, roi: str = "SPLEEN", **options: object) -> Manifest:
    """Ingest (``options``: other :class:`IngestConfig` fields) and return the manifest written to the cache,
    also when no case was usable."""
    with contextlib.suppress(IngestError):
        ingest_site(input_dir, cache_dir, IngestConfig(roi=roi, **options))
    return Manifest.load(cache_dir)


def load_case(cache_dir: Path, case: CaseEntry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image array, the boolean label array and the (shared) RAS affine of a converted case."""
    image, label = nib.load(cache_dir / case.image), nib.load(cache_dir / case.label)
    np.testing.assert_allclose(label.affine, image.affine)
    assert label.shape == image.shape == tuple(case.shape)
    return np.asarray(image.dataobj), np.asarray(label.dataobj).astype(bool), image.affine


def world_truth(affine_ras: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The organ evaluated at each voxel centre, mapped through the NIfTI affine (RAS -> LPS)."""
    index = np.indices(shape).reshape(3, -1)
    ras = affine_ras[:3, :3] @ index + affine_ras[:3, 3:4]
    lps = ras.T * np.array([-1.0, -1.0, 1.0])
    return (organ_field(lps) < 0).reshape(shape)


def rejection_for(manifest: Manifest, source: str) -> Rejection:
    """The single rejection whose source is ``source``."""
    found = [rejection for rejection in manifest.rejected if rejection.source == source]
    assert len(found) == 1, f"expected one rejection of {source}, got {manifest.rejected}"
    return found[0]


def accepted_sources(manifest: Manifest) -> list[str]:
    """The structure sets of the accepted cases, sorted."""
    return sorted(case.structure_set for case in manifest.cases)


def series_uid(study: Study) -> str:
    return str(study.ct[0].SeriesInstanceUID)


def write_with_good_case(root: Path, study: Study) -> Path:
    """Write ``study`` under ``root/case`` beside a valid study under ``root/good``; return ``root``."""
    study.write(root / "case")
    make_study(SMALL, seed=99).write(root / "good")
    return root
