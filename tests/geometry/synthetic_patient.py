"""A small synthetic patient for geometry tests: the project's phantom on a coarse grid, as real DICOM.

The CT and an RTSTRUCT with several organs (BODY, LIVER, SPLEEN, KIDNEY_L, KIDNEY_R by default) are written
with the project's own writers; contours come from the phantom's continuous fields, as ``dose3d synth``
draws them, so the meshes are measured against a physician-like structure set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from dose3d_fl.geometry.calibration import schneider_2000
from dose3d_fl.geometry.materials import build_material_table
from dose3d_fl.geometry.nomenclature import tg263_name
from dose3d_fl.geometry.phantom import VoxelPhantom, build_phantom
from dose3d_fl.geometry.structures import Organ
from dose3d_fl.synth.ct_writer import CTSeriesSpec, build_ct_slices
from dose3d_fl.synth.hospital import patient_identity, slice_polygons
from dose3d_fl.synth.phantom import sample_phantom
from dose3d_fl.synth.scanner import SITE_SCANNERS, scan_geometry, simulate_ct

ORGANS = (
    ("BODY", (0, 255, 0), "EXTERNAL"),
    ("LIVER", (160, 32, 240), "ORGAN"),
    ("SPLEEN", (255, 128, 0), "ORGAN"),
    ("KIDNEY_L", (255, 255, 0), "ORGAN"),
    ("KIDNEY_R", (0, 200, 255), "ORGAN"),
)


@dataclass
class SyntheticPatient:
    """A written patient: the CT folder, its RTSTRUCT, and what made them."""

    ct_dir: Path
    rtstruct: Path
    geometry: VolumeGeometry
    hu: np.ndarray
    fields: dict[str, np.ndarray]
    ct: list[FileDataset]


def write_patient(
    folder: Path,
    seed: int = 0,
    matrix: int = 48,
    pixel_mm: float = 8.0,
    slice_mm: float = 8.0,
    position: str = "HFS",
    organs: tuple[tuple[str, tuple[int, int, int], str], ...] = ORGANS,
) -> SyntheticPatient:
    """Synthesise one patient on a coarse grid and write ``folder/CT/*.dcm`` and ``folder/RS.dcm``."""
    rng = np.random.default_rng(seed)
    phantom = sample_phantom(rng)
    scanner = replace(
        SITE_SCANNERS[0],
        matrix=matrix,
        pixel_spacing=pixel_mm,
        slice_thickness=slice_mm,
        patient_position=position,
    )
    geometry = scan_geometry(phantom, scanner, (0.0, 0.0))
    hu, fields = simulate_ct(phantom, geometry, scanner, rng)
    identity = patient_identity(seed, 1, 1, scanner, rng)
    slices = geometry.shape[2]
    spec = CTSeriesSpec(
        series_instance_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        sop_instance_uids=tuple(generate_uid() for _ in range(slices)),
        instance_numbers=tuple(range(1, slices + 1)),
        slice_thickness=slice_mm,
        patient_position=position,
    )
    ct = build_ct_slices(hu, geometry, identity, spec)
    rois = [RoiContours(name, color, kind, slice_polygons(fields[name])) for name, color, kind in organs]
    rtstruct = build_rtstruct(
        ct[0],
        spec.sop_instance_uids,
        geometry,
        rois,
        sop_instance_uid=generate_uid(),
        series_instance_uid=generate_uid(),
    )
    ct_dir = folder / "CT"
    ct_dir.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(ct):
        ds.save_as(ct_dir / f"CT{k:03d}.dcm", enforce_file_format=True)
    rtstruct_path = folder / "RS.dcm"
    rtstruct.save_as(rtstruct_path, enforce_file_format=True)
    return SyntheticPatient(
        ct_dir=ct_dir, rtstruct=rtstruct_path, geometry=geometry, hu=hu, fields=fields, ct=ct
    )


def write_rtplan(
    path: Path, frame_of_reference_uid: str, isocentres: list[tuple[float, float, float]]
) -> Path:
    """A minimal RT Plan with one beam per isocentre (enough for the isocentre reader)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTPLAN"
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.RTPlanDate = dt.date(2024, 1, 1).strftime("%Y%m%d")
    ds.BeamSequence = []
    for number, position in enumerate(isocentres, start=1):
        point = Dataset()
        point.ControlPointIndex = 0
        point.IsocenterPosition = [f"{v:.2f}" for v in position]
        beam = Dataset()
        beam.BeamNumber = number
        beam.BeamName = f"B{number}"
        beam.ControlPointSequence = [point]
        ds.BeamSequence.append(beam)
    ds.save_as(path, enforce_file_format=True)
    return path


SMALL_GRID = VolumeGeometry(
    shape=(6, 5, 4),
    row_direction=(-1.0, 0.0, 0.0),
    column_direction=(0.0, 1.0, 0.0),
    slice_direction=(0.0, 0.0, -1.0),
    spacing=(2.0, 3.0, 4.0),
    origin=(10.0, -20.0, 30.0),
)


def small_phantom() -> tuple[VoxelPhantom, np.ndarray, np.ndarray]:
    """A 6 x 5 x 4 phantom on a feet-first grid: air, a soft-tissue body with one bone voxel, a small organ."""
    hu = np.full(SMALL_GRID.shape, -1000.0, dtype=np.float32)
    body = np.zeros(SMALL_GRID.shape, dtype=bool)
    body[1:5, 1:4, :] = True
    hu[body] = 40.0
    organ = np.zeros(SMALL_GRID.shape, dtype=bool)
    organ[2:4, 2, 1:3] = True
    hu[2, 2, 1] = 700.0
    organs = [
        Organ(tg263_name("BODY"), body, "EXTERNAL", (0, 255, 0)),
        Organ(tg263_name("SPLEEN"), organ, "ORGAN", (255, 128, 0)),
    ]
    curve = schneider_2000()
    return build_phantom(hu, SMALL_GRID, organs, curve, build_material_table(curve)), body, organ
