"""The voxel phantom: organ labels, mass density and material per voxel on the CT grid, written as NIfTI.

Files (all on the CT's own grid, no resampling):

* ``labels.nii.gz`` (uint16): 0 outside every structure, else the value of a row of ``labels.csv`` /
  ``labels.json`` (TG-263 name, source name, RTROIInterpretedType, colour, voxels). Where structures overlap
  (an organ inside ``External``), the smaller structure's value wins; each organ's own voxel count is kept in
  the table.
* ``density.nii.gz`` (float32, g/cm3): the calibration curve applied to the CT.
* ``materials.nii.gz`` (uint16): the index of each voxel's material in ``materials.csv``.
* ``ct_hu.nii.gz`` (int16 when the HU are integers, else float32): the HU the phantom was made from (clipped
  when ``--clip-hu`` was given), the image GATE's ``hu_to_materials.txt`` applies to.
* ``grid.json``: shape, spacing, origin and direction cosines in DICOM patient coordinates (LPS mm), with
  both affines.

NIfTI affines follow the NIfTI convention, RAS: ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``. ITK, and
so GATE, reads them back into LPS. nibabel writes the files; ``data.ingest`` has the same five lines
privately, so they are repeated here rather than reached into.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.data.nifti import save_nifti
from dose3d_fl.files import write_json_atomic, write_text_atomic
from dose3d_fl.geometry.calibration import HUDensityCurve
from dose3d_fl.geometry.materials import MaterialTable
from dose3d_fl.geometry.structures import Organ

LABELS_NAME = "labels.nii.gz"
DENSITY_NAME = "density.nii.gz"
MATERIALS_NAME = "materials.nii.gz"
HU_NAME = "ct_hu.nii.gz"
GRID_NAME = "grid.json"
_LABEL_COLUMNS = (
    "label",
    "name",
    "source_name",
    "tg263",
    "interpreted_type",
    "color",
    "voxels",
    "voxels_in_map",
    "volume_ml",
)


@dataclass(frozen=True)
class LabelEntry:
    """One row of the label side table.

    Args:
        value: its value in ``labels.nii.gz``.
        name: TG-263 name (or the source name when there is none).
        source_name: the name in the structure set (or given for the label value).
        tg263: whether ``name`` is a TG-263 name.
        interpreted_type: RTROIInterpretedType.
        color: display colour, RGB 0..255.
        voxels: voxels of the structure's own mask.
        voxels_in_map: voxels that carry its value in the label map (fewer where a smaller structure overlaps).
        volume_ml: ``voxels`` times the voxel volume.
    """

    value: int
    name: str
    source_name: str
    tg263: bool
    interpreted_type: str
    color: tuple[int, int, int]
    voxels: int
    voxels_in_map: int
    volume_ml: float


@dataclass
class VoxelPhantom:
    """Everything a Monte Carlo engine needs on the CT grid."""

    geometry: VolumeGeometry
    hu: np.ndarray
    labels: np.ndarray
    label_table: list[LabelEntry]
    density: np.ndarray
    materials: np.ndarray
    material_table: MaterialTable
    curve: HUDensityCurve


def build_phantom(
    hu: np.ndarray, geometry: VolumeGeometry, organs: list[Organ], curve: HUDensityCurve, table: MaterialTable
) -> VoxelPhantom:
    """Label, density and material maps of a CT whose HU lie inside the calibration's range.

    Args:
        hu: ``(columns, rows, slices)`` HU on ``geometry`` (already clipped if that was asked for).
        geometry: the CT grid.
        organs: the structures, in the order their label values are given (1, 2, ...).
        curve: HU -> density.
        table: HU -> material.

    Returns:
        The phantom.
    """
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    labels = np.zeros(hu.shape, dtype=np.uint16)
    # Larger structures first, so a smaller one inside (an organ in External) keeps its voxels.
    for value in sorted(range(1, len(organs) + 1), key=lambda v: -int(organs[v - 1].mask.sum())):
        labels[organs[value - 1].mask] = value
    counts = np.bincount(labels.ravel(), minlength=len(organs) + 1)
    entries = [
        LabelEntry(
            value=value,
            name=organ.name.name,
            source_name=organ.name.source,
            tg263=organ.name.standard,
            interpreted_type=organ.interpreted_type,
            color=organ.color,
            voxels=int(organ.mask.sum()),
            voxels_in_map=int(counts[value]),
            volume_ml=round(int(organ.mask.sum()) * voxel_ml, 3),
        )
        for value, organ in enumerate(organs, start=1)
    ]
    return VoxelPhantom(
        geometry=geometry,
        hu=hu,
        labels=labels,
        label_table=entries,
        density=curve.densities(hu),
        materials=table.assign(hu),
        material_table=table,
        curve=curve,
    )


def write_phantom(phantom: VoxelPhantom, folder: str | Path, extra_grid: dict | None = None) -> list[Path]:
    """Write the phantom's NIfTI files, label table and grid description into ``folder``; returns the paths.

    Args:
        phantom: the phantom.
        folder: destination (created).
        extra_grid: more entries for ``grid.json`` (e.g. the CT's UIDs).
    """
    folder = Path(folder)
    affine = phantom.geometry.affine_ras
    hu = phantom.hu
    hu_array = np.rint(hu).astype(np.int16) if np.array_equal(hu, np.rint(hu)) else hu.astype(np.float32)
    paths = [
        save_nifti(phantom.labels, affine, folder / LABELS_NAME, "dose3d organ labels, see labels.csv"),
        save_nifti(phantom.density, affine, folder / DENSITY_NAME, "dose3d mass density g/cm3"),
        save_nifti(
            phantom.materials, affine, folder / MATERIALS_NAME, "dose3d material index, see materials.csv"
        ),
        save_nifti(hu_array, affine, folder / HU_NAME, "dose3d CT HU"),
        write_text_atomic(folder / "labels.csv", label_table_csv(phantom.label_table)),
        write_json_atomic(folder / "labels.json", [_entry_json(e) for e in phantom.label_table]),
        write_json_atomic(folder / GRID_NAME, grid_description(phantom.geometry) | (extra_grid or {})),
    ]
    return paths


def grid_description(geometry: VolumeGeometry) -> dict:
    """The grid in words and numbers: LPS origin, spacing, directions, both affines, the centre."""
    shape = np.asarray(geometry.shape)
    centre = geometry.affine_lps @ np.append((shape - 1) / 2.0, 1.0)
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    corner_points = (geometry.affine_lps @ corners.T).T[:, :3]
    return {
        "frame": "DICOM patient coordinates, LPS: +x to the patient's left, +y posterior, +z superior; millimetres",
        "index_order": (
            "array [i, j, k]: i along row_direction (CT columns), j along column_direction (CT rows), "
            "k along slice_direction"
        ),
        "nifti_affine": "RAS, the NIfTI convention: affine_ras = diag(-1, -1, 1, 1) @ affine_lps",
        "shape": [int(n) for n in geometry.shape],
        "spacing_mm": [float(s) for s in geometry.spacing],
        "origin_lps_mm": [float(v) for v in geometry.origin],
        "origin_is": "centre of voxel (0, 0, 0), the ImagePositionPatient of the first slice",
        "row_direction": [float(v) for v in geometry.row_direction],
        "column_direction": [float(v) for v in geometry.column_direction],
        "slice_direction": [float(v) for v in geometry.slice_direction],
        "centre_lps_mm": [float(v) for v in centre[:3]],
        "voxel_centres_min_lps_mm": [float(v) for v in corner_points.min(axis=0)],
        "voxel_centres_max_lps_mm": [float(v) for v in corner_points.max(axis=0)],
        "voxel_volume_ml": float(np.prod(geometry.spacing)) / 1000.0,
        "affine_lps": geometry.affine_lps.tolist(),
        "affine_ras": geometry.affine_ras.tolist(),
    }


def label_table_csv(entries: list[LabelEntry]) -> str:
    """The label side table as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_LABEL_COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.value,
                e.name,
                e.source_name,
                "yes" if e.tg263 else "no",
                e.interpreted_type,
                "/".join(map(str, e.color)),
                e.voxels,
                e.voxels_in_map,
                f"{e.volume_ml:.3f}",
            ]
        )
    return out.getvalue()


def _entry_json(entry: LabelEntry) -> dict:
    return {
        "label": entry.value,
        "name": entry.name,
        "source_name": entry.source_name,
        "tg263": entry.tg263,
        "interpreted_type": entry.interpreted_type,
        "color": list(entry.color),
        "voxels": entry.voxels,
        "voxels_in_map": entry.voxels_in_map,
        "volume_ml": entry.volume_ml,
    }
