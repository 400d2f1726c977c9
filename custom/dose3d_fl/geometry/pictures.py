"""Pictures of a phantom, drawn off-screen with matplotlib (no display needed).

* :func:`save_material_slices`: an axial and a coronal slice through the first organ, each voxel coloured by
  its material class, organs outlined in their display colours. As in ``dose3d segment``'s preview, the
  grid is reoriented to RAS first so every scanner orientation shows the same way (radiological display:
  the patient's left on the viewer's right, anterior up; coronal with the head up).
* :func:`save_mesh_view`: the organ meshes in 3D, seen from the patient's front-left; the External surface,
  if any, is drawn faint. Meshes with many faces are decimated for the drawing only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import trimesh
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from dose3d_fl.files import atomic_path
from dose3d_fl.geometry.materials import MATERIAL_CLASSES
from dose3d_fl.geometry.phantom import VoxelPhantom

CLASS_COLORS = {
    "air": "#000000",
    "lung": "#3b4c7a",
    "adipose": "#e6c86e",
    "soft tissue": "#c0504d",
    "connective tissue": "#e58a7c",
    "bone": "#f2f2f2",
    "dental amalgam": "#7fdbff",
    "metal": "#39cccc",
}
_DRAWN_FACES = 4000


@dataclass(frozen=True)
class DrawnMesh:
    """A mesh to draw: its name, surface (LPS mm), colour (RGB 0..255) and whether it is the body outline."""

    name: str
    mesh: trimesh.Trimesh
    color: tuple[int, int, int]
    external: bool = False


def hex_color(rgb: Sequence[int]) -> str:
    """``(255, 128, 0)`` -> ``"#ff8000"``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def save_material_slices(phantom: VoxelPhantom, path: str | Path, title: str = "") -> Path:
    """Write a PNG of an axial and a coronal slice coloured by material class, with organ outlines.

    Returns:
        ``path``.
    """
    affine = phantom.geometry.affine_ras
    lookup = np.zeros(max(m.index for m in phantom.material_table.materials) + 1, dtype=np.uint8)
    for m in phantom.material_table.materials:
        lookup[m.index] = MATERIAL_CLASSES.index(m.material_class)
    classes, zooms = _canonical(lookup[phantom.materials], affine)
    labels, _ = _canonical(phantom.labels, affine)
    organs = [e for e in phantom.label_table if e.interpreted_type != "EXTERNAL"] or phantom.label_table
    centre = _centre(labels, organs[0].value if organs else 0)
    sx, sy, sz = zooms
    views = (
        ("axial", lambda v: v[::-1, :, centre[2]].T, sy / sx),
        ("coronal", lambda v: v[::-1, centre[1], :].T, sz / sx),
    )
    cmap = ListedColormap([CLASS_COLORS[c] for c in MATERIAL_CLASSES])
    figure = Figure(figsize=(10, 5), dpi=80, facecolor="black")
    axes = figure.subplots(1, 2)
    for ax, (name, cut, aspect) in zip(axes, views, strict=True):
        ax.imshow(
            cut(classes),
            cmap=cmap,
            vmin=-0.5,
            vmax=len(MATERIAL_CLASSES) - 0.5,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        for entry in phantom.label_table:
            plane = (cut(labels) == entry.value).astype(np.float32)
            if plane.any():
                ax.contour(plane, levels=[0.5], colors=[hex_color(entry.color)], linewidths=1.2)
        ax.set_title(name, color="white", fontsize=10)
        ax.set_axis_off()
    present = sorted({m.material_class for m in phantom.material_table.materials}, key=MATERIAL_CLASSES.index)
    handles = [Patch(facecolor=CLASS_COLORS[c], edgecolor="grey", label=c) for c in present]
    handles += [
        Line2D([], [], color=hex_color(e.color), linewidth=2, label=e.name) for e in phantom.label_table
    ]
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6),
        frameon=False,
        labelcolor="white",
        fontsize=8,
    )
    if title:
        figure.suptitle(title, color="white", fontsize=11)
    figure.subplots_adjust(bottom=0.2, top=0.9, wspace=0.05)
    return _save(figure, path)


def save_mesh_view(meshes: Sequence[DrawnMesh], path: str | Path, title: str = "") -> Path:
    """Write a PNG of the meshes in 3D (LPS mm axes), seen from the patient's front-left.

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(6.4, 6.4), dpi=72)
    ax = figure.add_subplot(projection="3d")
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    for drawn in meshes:
        mesh = _for_drawing(drawn.mesh)
        color = np.asarray(drawn.color) / 255.0
        alpha = 0.08 if drawn.external else 0.9
        ax.add_collection3d(
            Poly3DCollection(mesh.triangles, facecolors=[(*color, alpha)], linewidths=0, shade=True)
        )
        low, high = np.minimum(low, mesh.bounds[0]), np.maximum(high, mesh.bounds[1])
    if np.all(np.isfinite(low)):
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_zlim(low[2], high[2])
        ax.set_box_aspect(np.maximum(high - low, 1e-3))
    ax.view_init(elev=15, azim=-60)
    ax.set_xlabel("x (L) mm")
    ax.set_ylabel("y (P) mm")
    ax.set_zlabel("z (S) mm")
    handles = [Patch(facecolor=hex_color(d.color), label=d.name) for d in meshes]
    if handles:
        figure.legend(
            handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False, fontsize=8
        )
    if title:
        figure.suptitle(title, fontsize=11)
    return _save(figure, path)


def _for_drawing(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= _DRAWN_FACES:
        return mesh
    try:
        return mesh.simplify_quadric_decimation(face_count=_DRAWN_FACES)
    except (ImportError, ValueError):
        return mesh


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asanyarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def _centre(labels: np.ndarray, value: int) -> tuple[int, int, int]:
    voxels = np.argwhere(labels == value) if value else np.empty((0, 3))
    if len(voxels):
        return tuple(round(float(c)) for c in voxels.mean(axis=0))
    return tuple(n // 2 for n in labels.shape)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", facecolor=figure.get_facecolor())
    return path
