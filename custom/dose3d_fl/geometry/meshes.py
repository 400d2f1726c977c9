"""Organ surfaces: one closed triangle mesh per mask, in patient millimetres (LPS), for printing and display.

The steps, each from a kept library:

1. marching cubes on the mask (scikit-image), cropped to the organ and padded with one empty voxel so every
   surface closes; vertices are mapped through the CT grid to LPS millimetres. Lorensen's original table is
   tried first: on binary masks Lewiner's variant sometimes leaves an edge shared by four triangles (5 of
   198 synthetic organs), which is not a printable surface; Lewiner's, then Lewiner's on the mask blurred by
   half a voxel, are the fall-backs;
2. Taubin smoothing (trimesh), a low-pass filter that removes the voxel staircase without the shrinking of
   plain Laplacian smoothing;
3. quadric decimation (trimesh with fast-simplification), kept only if the mesh stays watertight and no
   vertex of the smoothed surface ends up farther than half the smallest voxel side from the decimated one
   (on small organs with a cavity, such as a kidney's sinus, decimation can otherwise fold a feature away);
   else half the decimation is tried, then none;
4. a volume correction: every vertex moves along its normal by ``(V_mask - V_mesh) / area``, twice, so the
   mesh encloses the mask's volume. Marching cubes on a binary mask cuts the voxel corners and loses a few
   per cent of the volume, and smoothing and decimation change it a little more; no library call restores a
   target volume, hence these few lines.

Faces are wound so that normals point outwards (positive volume), whatever the handedness of the CT grid.
Point-to-surface distances (:func:`surface_distances`) are exact: trimesh's own query needs the optional
``rtree`` package, so a k-d tree of triangle centroids (scipy) selects the candidate triangles and trimesh's
``closest_point`` measures them.

Meshes are written as binary STL (what slicers for 3D printers read), and on request PLY and OBJ. STL carries
no units: the 80-byte header says "LPS mm".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.files import atomic_path
from dose3d_fl.geometry.errors import GeometryInputError

log = logging.getLogger(__name__)

MESH_FORMATS = ("stl", "ply", "obj")


class MeshError(Exception):
    """A mesh could not be made closed; the message names the structure."""


@dataclass(frozen=True)
class MeshConfig:
    """How organ surfaces are made.

    Args:
        smoothing_iterations: Taubin smoothing passes (0: none).
        decimation: fraction of the faces to remove (0: none; 0.5 halves them).
        volume_correction: move the surface so the mesh encloses the mask's volume.
        formats: files to write per organ, among :data:`MESH_FORMATS`.
    """

    smoothing_iterations: int = 10
    decimation: float = 0.5
    volume_correction: bool = True
    formats: tuple[str, ...] = ("stl",)

    def __post_init__(self) -> None:
        if self.smoothing_iterations < 0:
            raise GeometryInputError(
                f"smoothing iterations must be at least 0, got {self.smoothing_iterations}"
            )
        if not 0 <= self.decimation < 1:
            raise GeometryInputError(f"decimation must lie in [0, 1), got {self.decimation}")
        unknown = sorted(set(self.formats) - set(MESH_FORMATS))
        if unknown or not self.formats:
            raise GeometryInputError(
                f"mesh formats must be among {', '.join(MESH_FORMATS)}, got {', '.join(self.formats)}"
            )


def organ_mesh(
    mask: np.ndarray, geometry: VolumeGeometry, config: MeshConfig | None = None
) -> trimesh.Trimesh:
    """A closed surface around the voxels of ``mask``, in LPS millimetres.

    Args:
        mask: boolean ``(columns, rows, slices)`` on ``geometry``.
        geometry: the CT grid.
        config: smoothing, decimation and volume correction.

    Returns:
        A watertight mesh with outward normals.

    Raises:
        MeshError: an empty mask, or a surface that is not watertight after marching cubes.
    """
    config = config or MeshConfig()
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise MeshError("the mask is empty")
    mesh = _marching_cubes(mask, geometry)
    target = float(mask.sum()) * float(np.prod(geometry.spacing))
    if config.smoothing_iterations:
        trimesh.smoothing.filter_taubin(mesh, iterations=config.smoothing_iterations)
    if config.decimation > 0:
        mesh = _decimated(mesh, config.decimation, 0.5 * min(geometry.spacing))
    if config.volume_correction:
        _restore_volume(mesh, target)
    return mesh


def _marching_cubes(mask: np.ndarray, geometry: VolumeGeometry) -> trimesh.Trimesh:
    """A watertight marching-cubes surface at 0.5 of the cropped, padded mask, in LPS with outward normals."""
    nonzero = np.argwhere(mask)
    low, high = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    crop = np.pad(mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]], 1).astype(np.float32)
    affine = geometry.affine_lps
    attempts = (("lorensen", crop), ("lewiner", crop), ("lewiner", gaussian_filter(crop, 0.5)))
    for method, field in attempts:
        vertices, faces, _, _ = marching_cubes(field, level=0.5, method=method)
        points = (vertices + (low - 1)) @ affine[:3, :3].T + affine[:3, 3]
        mesh = trimesh.Trimesh(points, faces, process=True)
        if mesh.is_watertight and mesh.is_winding_consistent:
            if mesh.volume < 0:
                mesh.invert()
            return mesh
        log.info("marching cubes (%s) gave an open surface; trying the next method", method)
    raise MeshError("marching cubes gave no closed surface")


def _decimated(mesh: trimesh.Trimesh, fraction: float, tolerance_mm: float) -> trimesh.Trimesh:
    """Quadric decimation removing ``fraction`` of the faces (or half that), if the surface stays closed and near."""
    for attempt in (fraction, fraction / 2):
        try:
            reduced = mesh.simplify_quadric_decimation(percent=attempt)
        except (ImportError, ValueError) as err:
            log.warning("decimation skipped: %s", err)
            return mesh
        if not (reduced.is_watertight and reduced.is_winding_consistent and reduced.volume > 0):
            continue
        deviation = _largest_deviation(reduced, mesh.vertices, tolerance_mm)
        if deviation <= tolerance_mm:
            return reduced
        log.info("decimation by %.2f moved the surface %.2f mm (> %.2f mm)", attempt, deviation, tolerance_mm)
    log.info("kept the undecimated mesh of %d faces", len(mesh.faces))
    return mesh


def _largest_deviation(mesh: trimesh.Trimesh, points: np.ndarray, tolerance_mm: float) -> float:
    """The largest distance from ``points`` to ``mesh``, exact where a cheap upper bound exceeds the tolerance.

    Each point's distance to its nearest few triangles bounds its distance from above; only the points whose
    bound exceeds ``tolerance_mm`` are measured exactly, which keeps the check fast on large surfaces.
    """
    triangles = mesh.triangles
    bound = _upper_bounds(triangles, triangles.mean(axis=1), points, 8)
    unsure = bound > tolerance_mm
    if not unsure.any():
        return float(bound.max())
    return max(float(bound[~unsure].max(initial=0.0)), float(surface_distances(mesh, points[unsure]).max()))


def _restore_volume(mesh: trimesh.Trimesh, target_mm3: float, passes: int = 2) -> None:
    """Move the vertices along their normals until the mesh encloses ``target_mm3`` (first-order steps)."""
    for _ in range(passes):
        offset = (target_mm3 - mesh.volume) / mesh.area
        moved = mesh.vertices + offset * mesh.vertex_normals
        mesh.vertices = moved


def surface_distances(mesh: trimesh.Trimesh, points: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """Exact distance (mm) from each point to the nearest point of the mesh surface.

    The nearest ``neighbours`` triangles (by centroid) give each point an upper bound; then every triangle that
    could be closer, one whose centroid lies within the bound plus its own reach (centroid to farthest vertex),
    is measured. Triangles are grouped by reach, so a few large triangles (flat regions after decimation) do not
    widen the search around every point.

    Args:
        mesh: a triangle mesh.
        points: ``(N, 3)`` positions in the mesh's frame.
        neighbours: triangles measured per point for the first bound.

    Returns:
        ``(N,)`` distances.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    triangles = mesh.triangles
    centroids = triangles.mean(axis=1)
    reach = np.linalg.norm(triangles - centroids[:, None, :], axis=2).max(axis=1)
    best = _upper_bounds(triangles, centroids, points, neighbours)
    group_of = np.ceil(np.log2(np.maximum(reach, 1e-3))).astype(int)
    for group in np.unique(group_of):
        members = np.flatnonzero(group_of == group)
        found = cKDTree(centroids[members]).query_ball_point(points, best + reach[members].max() + 1e-9)
        counts = np.array([len(c) for c in found])
        if counts.sum():
            candidates = members[np.concatenate([np.asarray(c, dtype=np.int64) for c in found])]
            _measure(triangles, points, np.repeat(np.arange(len(points)), counts), candidates, best)
    return best


def _upper_bounds(
    triangles: np.ndarray, centroids: np.ndarray, points: np.ndarray, neighbours: int
) -> np.ndarray:
    """Each point's distance to the nearest of its ``neighbours`` closest triangles (by centroid)."""
    _, nearest = cKDTree(centroids).query(points, k=min(neighbours, len(centroids)))
    nearest = nearest.reshape(len(points), -1)
    bound = np.full(len(points), np.inf)
    _measure(triangles, points, np.repeat(np.arange(len(points)), nearest.shape[1]), nearest.ravel(), bound)
    return bound


def _measure(
    triangles: np.ndarray,
    points: np.ndarray,
    point_index: np.ndarray,
    triangle_index: np.ndarray,
    best: np.ndarray,
) -> None:
    """Lower ``best`` to the distance from each listed point to each listed triangle, in bounded chunks."""
    chunk = 500_000
    for start in range(0, len(point_index), chunk):
        p, t = point_index[start : start + chunk], triangle_index[start : start + chunk]
        closest = trimesh.triangles.closest_point(triangles[t], points[p])
        np.minimum.at(best, p, np.linalg.norm(closest - points[p], axis=1))


def write_mesh(
    mesh: trimesh.Trimesh, stem: Path, formats: tuple[str, ...] = ("stl",), label: str = ""
) -> list[Path]:
    """Write ``stem.stl`` (binary), and ``stem.ply`` / ``stem.obj`` when asked; returns the paths.

    Args:
        mesh: the surface (LPS millimetres).
        stem: path without suffix.
        formats: among :data:`MESH_FORMATS`.
        label: structure name for the STL header.
    """
    paths = []
    for file_type in formats:
        path = stem.with_name(f"{stem.name}.{file_type}")
        if file_type == "stl":
            data = _binary_stl(mesh, f"dose3d geometry {label}: LPS mm")
        else:
            data = mesh.export(file_type=file_type)
            data = data.encode() if isinstance(data, str) else data
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        paths.append(path)
    return paths


def _binary_stl(mesh: trimesh.Trimesh, header: str) -> bytes:
    """trimesh's binary STL with ``header`` in its 80-byte header (trimesh leaves it blank)."""
    data = bytearray(trimesh.exchange.stl.export_stl(mesh))
    data[:80] = header.encode("ascii", errors="replace")[:80].ljust(80, b" ")
    return bytes(data)


def read_mesh(path: str | Path) -> trimesh.Trimesh:
    """Read a mesh file written by :func:`write_mesh` (vertices merged, as written)."""
    return trimesh.load_mesh(str(path), process=True)
