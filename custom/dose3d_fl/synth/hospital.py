"""Synthetic multi-site DICOM: abdominal CT series with RTSTRUCT delineations per patient.

By default each structure set holds BODY and SPLEEN, named alike at every site. With ``organs_at_risk`` it
holds the body and the organs at risk of :mod:`~dose3d_fl.synth.contouring`, named each site's way and
partially drawn; the CT is the same either way.

Every identifying attribute holds a synthetic value containing :data:`PHI_MARKER`, so tests can prove that
no patient identifier leaves a site. Output is deterministic for a seed (bytes included): UIDs derive
from the seed, site and patient, and each patient has its own random stream.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from tqdm import tqdm

from dose3d_fl.data.contours import polygons_from_field
from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from dose3d_fl.synth.contouring import (
    SPLEEN_ROIS,
    SynthRoi,
    convention_for_site,
    organ_label_map,
    patient_rois,
)
from dose3d_fl.synth.ct_writer import CTSeriesSpec, StudyIdentity, build_ct_slices
from dose3d_fl.synth.phantom import AbdomenPhantom, sample_phantom
from dose3d_fl.synth.scanner import ScannerProfile, scan_geometry, scanner_for_site, simulate_ct

logger = logging.getLogger(__name__)

PHI_MARKER = "SYNTHPHI"
DEFAULT_PATIENTS = (12, 8, 5)

STRUCTURES = SPLEEN_ROIS


@dataclass
class SyntheticPatient:
    """One synthesised patient: anatomy, the reconstructed CT and its ground truth."""

    phantom: AbdomenPhantom
    geometry: VolumeGeometry
    hu: np.ndarray
    fields: dict[str, np.ndarray]

    @property
    def spleen_mask(self) -> np.ndarray:
        """Ground-truth spleen mask on the CT grid ``(columns, rows, slices)``."""
        return self.fields["SPLEEN"] < 0

    def label_map(self, organs: tuple[str, ...] | None = None) -> np.ndarray:
        """Ground-truth organ labels on the CT grid: organ ``i`` of ``organs`` (TG-263) is ``i + 1``.

        See :func:`~dose3d_fl.synth.contouring.organ_label_map`; default every organ at risk.
        """
        return organ_label_map(self.fields, organs)


@dataclass
class WrittenStudy:
    """Files written for one patient."""

    ct_files: list[Path]
    rtstruct_file: Path
    series_instance_uid: str


def synthesize_patient(rng: np.random.Generator, scanner: ScannerProfile) -> SyntheticPatient:
    """Draw a patient and image it with a site's scanner."""
    phantom = sample_phantom(rng)
    table_offset = (float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8)))
    geometry = scan_geometry(phantom, scanner, table_offset)
    hu, fields = simulate_ct(phantom, geometry, scanner, rng)
    return SyntheticPatient(phantom=phantom, geometry=geometry, hu=hu, fields=fields)


def patient_identity(
    seed: int, site: int, patient: int, scanner: ScannerProfile, rng: np.random.Generator
) -> StudyIdentity:
    """Synthetic, marker-carrying identifiers for a patient (``site`` and ``patient`` 1-based)."""
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 50 * 365)))
    return StudyIdentity(
        patient_name=f"{PHI_MARKER}^PATIENT{site}X{patient:03d}",
        patient_id=f"{PHI_MARKER}-{site}-{patient:03d}",
        patient_birth_date=birth.strftime("%Y%m%d"),
        patient_sex=str(rng.choice(["F", "M"])),
        study_instance_uid=_uid(seed, site, patient, "study"),
        study_id=f"{PHI_MARKER}{patient:03d}",
        accession_number=f"{PHI_MARKER}{site}{patient:04d}",
        study_date=dt.date(2023, 1, 2) + dt.timedelta(days=int(rng.integers(0, 600))),
        institution_name=f"{PHI_MARKER} Hospital {site}",
        referring_physician_name=f"{PHI_MARKER}^REFERRER{site}",
        station_name=f"{PHI_MARKER}CT{site}",
        manufacturer=scanner.manufacturer,
        model_name=scanner.model,
    )


def write_study(
    patient: SyntheticPatient,
    identity: StudyIdentity,
    scanner: ScannerProfile,
    out_dir: Path,
    uid_entropy: Sequence[str],
    patient_folder: str,
    rois: Sequence[SynthRoi] = STRUCTURES,
    character_set: str | None = None,
) -> WrittenStudy:
    """Write a patient's CT series and RTSTRUCT under ``out_dir`` in the scanner's export layout.

    Args:
        patient: the synthesised patient.
        identity: patient/study attributes.
        scanner: the site's scanner (rescale, layout, acquisition attributes).
        out_dir: the site folder.
        uid_entropy: strings that make this study's UIDs unique and reproducible.
        patient_folder: folder name used by layouts that group by patient.
        rois: the structures to delineate (default BODY and SPLEEN).
        character_set: SpecificCharacterSet the site writes its structure sets in (e.g. ``ISO_IR 192``)
            even when their text is ASCII; None leaves it to the writer.

    Returns:
        The written files.
    """
    slices = patient.geometry.shape[2]
    spec = CTSeriesSpec(
        series_instance_uid=generate_uid(entropy_srcs=[*uid_entropy, "ct-series"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*uid_entropy, "frame"]),
        sop_instance_uids=tuple(
            generate_uid(entropy_srcs=[*uid_entropy, "ct", str(k)]) for k in range(slices)
        ),
        # Scanners number slices in acquisition order, head to feet: never the order to trust.
        instance_numbers=tuple(_head_to_feet_numbers(patient.geometry)),
        rescale_intercept=scanner.rescale_intercept,
        slice_thickness=scanner.slice_thickness,
        patient_position=scanner.patient_position,
        kernel=scanner.kernel,
    )
    datasets = build_ct_slices(patient.hu, patient.geometry, identity, spec)
    contours = [
        RoiContours(roi.name, roi.color, roi.interpreted_type, slice_polygons(patient.fields[roi.structure]))
        for roi in rois
    ]
    rtstruct = build_rtstruct(
        datasets[0],
        spec.sop_instance_uids,
        patient.geometry,
        contours,
        sop_instance_uid=generate_uid(entropy_srcs=[*uid_entropy, "rtstruct"]),
        series_instance_uid=generate_uid(entropy_srcs=[*uid_entropy, "rtstruct-series"]),
        label="MANUAL",
        created=dt.datetime.combine(identity.study_date, dt.time(14, 0)),
    )
    # The synthetic delineation stands for a physician's, drawn in the site's planning system: ingestion
    # refuses the writer's default marks (dose3d-fl, AUTOMATIC) as a model's output.
    rtstruct.Manufacturer = "SYNTH TPS"
    for roi in rtstruct.StructureSetROISequence:
        roi.ROIGenerationAlgorithm = "MANUAL"
    if character_set is not None:
        rtstruct.SpecificCharacterSet = character_set
        # The pre-encoded contour data is ASCII in any character set: keep writing it as it is.
        rtstruct.set_original_encoding(False, True, convert_encodings(character_set))
    ct_paths = [out_dir / _ct_file_name(scanner.layout, patient_folder, ds) for ds in datasets]
    rt_path = out_dir / _rtstruct_file_name(scanner.layout, patient_folder, rtstruct)
    to_write = list(zip([*ct_paths, rt_path], [*datasets, rtstruct], strict=True))
    if scanner.layout == "pacs":
        # A PACS export carries the topogram too: a real single-image CT series that ingestion must refuse.
        scout = _topogram(patient, identity, spec, uid_entropy)
        to_write.append((out_dir / _ct_file_name(scanner.layout, patient_folder, scout), scout))
    for path, ds in to_write:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    return WrittenStudy(
        ct_files=ct_paths, rtstruct_file=rt_path, series_instance_uid=spec.series_instance_uid
    )


def slice_polygons(field: np.ndarray) -> dict[int, list[np.ndarray]]:
    """Contours of a structure on each slice, from its continuous field (sub-voxel accurate)."""
    polygons = {}
    for k in np.flatnonzero((field < 0).any(axis=(0, 1))):
        found = polygons_from_field(field[:, :, k].T)
        if found:
            polygons[int(k)] = found
    return polygons


def _head_to_feet_numbers(geometry: VolumeGeometry) -> list[int]:
    z = np.array([geometry.slice_origin(k)[2] for k in range(geometry.shape[2])])
    numbers = np.empty(len(z), dtype=int)
    numbers[np.argsort(-z, kind="stable")] = np.arange(1, len(z) + 1)
    return numbers.tolist()


def _topogram(
    patient: SyntheticPatient, identity: StudyIdentity, spec: CTSeriesSpec, uid_entropy: Sequence[str]
) -> Dataset:
    """A coronal projection of the CT (mean HU through the patient), as the scanner's scout image."""
    geometry = patient.geometry
    projection = patient.hu.mean(axis=1, keepdims=True).transpose(0, 2, 1)
    row_dir, col_dir = np.asarray(geometry.row_direction), np.asarray(geometry.slice_direction)
    scout_geometry = VolumeGeometry(
        shape=projection.shape,
        row_direction=geometry.row_direction,
        column_direction=geometry.slice_direction,
        slice_direction=tuple(float(v) for v in np.cross(row_dir, col_dir)),
        spacing=(geometry.spacing[0], geometry.spacing[2], 1.0),
        origin=geometry.origin,
    )
    scout_spec = CTSeriesSpec(
        series_instance_uid=generate_uid(entropy_srcs=[*uid_entropy, "scout-series"]),
        frame_of_reference_uid=spec.frame_of_reference_uid,
        sop_instance_uids=(generate_uid(entropy_srcs=[*uid_entropy, "scout"]),),
        instance_numbers=(1,),
        rescale_intercept=spec.rescale_intercept,
        slice_thickness=1.0,
        patient_position=spec.patient_position,
        kernel=spec.kernel,
        series_number=1,
    )
    (scout,) = build_ct_slices(projection, scout_geometry, identity, scout_spec)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SeriesDescription = "Topogram"
    return scout


def _ct_file_name(layout: str, patient_folder: str, ds: Dataset) -> str:
    if layout == "flat":
        return f"{ds.SOPInstanceUID}.dcm"
    if layout == "pacs":
        return f"{patient_folder}/{ds.StudyID}/SE{ds.SeriesNumber:03d}/IM{ds.InstanceNumber:05d}"
    return f"{patient_folder}/CT/CT{ds.InstanceNumber:04d}.dcm"


def _rtstruct_file_name(layout: str, patient_folder: str, ds: Dataset) -> str:
    if layout == "flat":
        return f"RS.{ds.SOPInstanceUID}.dcm"
    if layout == "pacs":
        return f"{patient_folder}/{ds.StudyID}/SE{ds.SeriesNumber:03d}/IM00001"
    return f"{patient_folder}/RTSTRUCT/RS.dcm"


def _uid(seed: int, site: int, patient: int, what: str) -> str:
    return generate_uid(entropy_srcs=["dose3d-synth", str(seed), str(site), str(patient), what])


def _synthesize_one(args: tuple[int, int, int, Path, bool]) -> int:
    seed, site, patient, out_dir, organs_at_risk = args
    scanner = scanner_for_site(site - 1)
    rng = np.random.default_rng([seed, site, patient])
    identity = patient_identity(seed, site, patient, scanner, rng)
    synthetic = synthesize_patient(rng, scanner)
    write_study(
        synthetic,
        identity,
        scanner,
        out_dir / f"site-{site}",
        uid_entropy=["dose3d-synth", str(seed), str(site), str(patient)],
        patient_folder=f"P{patient:03d}",
        rois=patient_rois(seed, site, patient) if organs_at_risk else STRUCTURES,
        character_set=convention_for_site(site - 1).character_set if organs_at_risk else None,
    )
    return synthetic.geometry.shape[2]


def patients_per_site(sites: int, counts: Sequence[int] | None = None) -> list[int]:
    """The patient count of each of ``sites`` sites.

    Args:
        sites: number of sites.
        counts: one count per site, or one count for every site; None cycles ``DEFAULT_PATIENTS``.

    Raises:
        ValueError: ``counts`` holds several values but not one per site.
    """
    if counts is None:
        return [DEFAULT_PATIENTS[i % len(DEFAULT_PATIENTS)] for i in range(sites)]
    if len(counts) == 1:
        return list(counts) * sites
    if len(counts) != sites:
        raise ValueError(f"{len(counts)} patient counts for {sites} sites: give one per site, or one for all")
    return list(counts)


def synthesize_federation(
    out_dir: Path,
    patients: Sequence[int] = DEFAULT_PATIENTS,
    seed: int = 0,
    workers: int = 2,
    show_progress: bool = False,
    organs_at_risk: bool = False,
) -> list[Path]:
    """Write ``out_dir/site-1 .. site-N``, one scanner per site, ``patients[i]`` patients at site ``i+1``.

    Args:
        out_dir: destination; site folders are created inside.
        patients: patient count per site (its length is the number of sites).
        seed: makes the whole federation reproducible.
        workers: processes used (patients are independent).
        show_progress: draw a progress bar on stderr when it is a terminal.
        organs_at_risk: delineate the organs at risk, each site with its own names and gaps
            (:mod:`~dose3d_fl.synth.contouring`), instead of BODY and SPLEEN everywhere.

    Returns:
        The site folders.
    """
    out_dir = Path(out_dir)
    jobs = [
        (seed, site, patient, out_dir, organs_at_risk)
        for site, count in enumerate(patients, 1)
        for patient in range(1, count + 1)
    ]
    for site, _ in enumerate(patients, 1):
        (out_dir / f"site-{site}").mkdir(parents=True, exist_ok=True)
        if scanner_for_site(site - 1).layout == "pacs":
            # PACS exports carry a text log beside the images: a real non-DICOM file to skip.
            (out_dir / f"site-{site}" / "EXPORT.TXT").write_text(f"Exported {patients[site - 1]} studies\n")
    progress = tqdm(
        total=len(jobs), desc="synthesising patients", unit="patient", disable=None if show_progress else True
    )
    with progress:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_synthesize_one, jobs):
                    progress.update()
        else:
            for job in jobs:
                _synthesize_one(job)
                progress.update()
    return [out_dir / f"site-{site}" for site in range(1, len(patients) + 1)]
