"""The geometry summary: per organ, volume from the mask and from the mesh, extent, centroid, and distances.

For each organ: volume (mL) of the voxel mask and enclosed by the mesh, their difference, whether the mesh is
watertight, its bounding box and the mask's centroid (LPS mm), the largest distance from the structure set's
contour points to the mesh (how faithfully the surface follows the physician's contours), and, when a plan
is given, each isocentre's distance to the centroid and to the surface, and whether it lies inside.

Point-to-surface distances are exact (:func:`dose3d_fl.geometry.meshes.surface_distances`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.files import json_safe, write_json_atomic, write_text_atomic
from dose3d_fl.geometry.inputs import Isocentre
from dose3d_fl.geometry.meshes import surface_distances
from dose3d_fl.geometry.structures import Organ


@dataclass(frozen=True)
class IsocentreDistance:
    """Where one isocentre lies relative to an organ (mm)."""

    beams: tuple[str, ...]
    position_lps_mm: tuple[float, float, float]
    to_centroid_mm: float
    to_surface_mm: float
    inside: bool


@dataclass(frozen=True)
class OrganSummary:
    """One organ's row of the summary (volumes in mL, positions and lengths in LPS mm)."""

    name: str
    source_name: str
    label: int
    volume_mask_ml: float
    volume_mesh_ml: float
    volume_difference_percent: float
    watertight: bool
    faces: int
    bbox_min_lps_mm: tuple[float, float, float]
    bbox_max_lps_mm: tuple[float, float, float]
    centroid_lps_mm: tuple[float, float, float]
    contour_points: int
    contour_to_mesh_max_mm: float | None
    isocentres: list[IsocentreDistance] = field(default_factory=list)


def summarise_organ(
    organ: Organ,
    label: int,
    mesh: trimesh.Trimesh,
    geometry: VolumeGeometry,
    isocentres: list[Isocentre] | None = None,
) -> OrganSummary:
    """Measure one organ against its mesh (and the plan's isocentres)."""
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    mask_ml = int(organ.mask.sum()) * voxel_ml
    mesh_ml = float(mesh.volume) / 1000.0
    index = np.argwhere(organ.mask).mean(axis=0)
    centroid = geometry.affine_lps @ np.append(index, 1.0)
    contour_max = None
    points = np.concatenate(organ.contours) if organ.contours else np.empty((0, 3))
    if len(points):
        contour_max = float(surface_distances(mesh, points).max())
    distances = []
    for iso in isocentres or []:
        position = np.asarray(iso.position, dtype=float)
        distances.append(
            IsocentreDistance(
                beams=iso.beams,
                position_lps_mm=iso.position,
                to_centroid_mm=round(float(np.linalg.norm(position - centroid[:3])), 2),
                to_surface_mm=round(float(surface_distances(mesh, position[None])[0]), 2),
                inside=_inside(organ.mask, geometry, position),
            )
        )
    low, high = mesh.bounds
    return OrganSummary(
        name=organ.name.name,
        source_name=organ.name.source,
        label=label,
        volume_mask_ml=round(mask_ml, 3),
        volume_mesh_ml=round(mesh_ml, 3),
        volume_difference_percent=round((mesh_ml - mask_ml) / mask_ml * 100.0, 3),
        watertight=bool(mesh.is_watertight),
        faces=len(mesh.faces),
        bbox_min_lps_mm=tuple(round(float(v), 2) for v in low),
        bbox_max_lps_mm=tuple(round(float(v), 2) for v in high),
        centroid_lps_mm=tuple(round(float(v), 2) for v in centroid[:3]),
        contour_points=len(points),
        contour_to_mesh_max_mm=None if contour_max is None else round(contour_max, 3),
        isocentres=distances,
    )


def _inside(mask: np.ndarray, geometry: VolumeGeometry, position: np.ndarray) -> bool:
    """Whether the voxel holding ``position`` belongs to the mask (False outside the grid)."""
    index = np.rint(np.linalg.solve(geometry.affine_lps, np.append(position, 1.0))[:3]).astype(int)
    if np.any(index < 0) or np.any(index >= np.asarray(mask.shape)):
        return False
    return bool(mask[tuple(index)])


def summary_json(organs: list[OrganSummary], context: dict) -> dict:
    """The summary as a JSON-ready dictionary: ``context`` (inputs, grid, units) and one entry per organ."""
    return json_safe(
        {
            **context,
            "units": {"volume": "mL", "position": "LPS mm (DICOM patient coordinates)", "distance": "mm"},
            "organs": [asdict(o) for o in organs],
        }
    )


def summary_table(organs: list[OrganSummary]) -> str:
    """A short text table of the summary."""
    header = (
        f"{'organ':<16}{'mask mL':>10}{'mesh mL':>10}{'diff %':>8}{'faces':>8}{'contour mm':>11}"
        f"  {'centroid LPS mm':<24}{'size mm':<20}"
    )
    lines = [header, "-" * len(header)]
    for o in organs:
        size = "x".join(f"{h - lo:.0f}" for lo, h in zip(o.bbox_min_lps_mm, o.bbox_max_lps_mm, strict=True))
        centroid = ", ".join(f"{v:.1f}" for v in o.centroid_lps_mm)
        contour = "-" if o.contour_to_mesh_max_mm is None else f"{o.contour_to_mesh_max_mm:.2f}"
        lines.append(
            f"{o.name:<16}{o.volume_mask_ml:>10.1f}{o.volume_mesh_ml:>10.1f}{o.volume_difference_percent:>8.2f}"
            f"{o.faces:>8}{contour:>11}  {centroid:<24}{size:<20}"
        )
        for iso in o.isocentres:
            where = "inside" if iso.inside else "outside"
            lines.append(
                f"{'':<16}isocentre ({', '.join(iso.beams)}): {iso.to_centroid_mm:.1f} mm to centroid, "
                f"{iso.to_surface_mm:.1f} mm to surface, {where}"
            )
    return "\n".join(lines) + "\n"


def write_summary(organs: list[OrganSummary], context: dict, folder: str | Path) -> list[Path]:
    """Write ``summary.json`` and ``summary.txt`` into ``folder``; returns their paths."""
    folder = Path(folder)
    return [
        write_json_atomic(folder / "summary.json", summary_json(organs, context)),
        write_text_atomic(folder / "summary.txt", summary_table(organs)),
    ]


def load_summary(path: str | Path) -> dict:
    """Read a ``summary.json``."""
    return json.loads(Path(path).read_text())
