"""Contours over three orthogonal CT slices (axial, coronal, sagittal) as a PNG, in radiological display.

The volume is reoriented to RAS first, so every scanner orientation displays the same way: axial with the
patient's left on the viewer's right and anterior up, coronal and sagittal with the head up. Each view is
marked with the patient directions at its edges (R/L, A/P, S/I) and titled with its slice position in DICOM
patient coordinates (mm), as a planning system shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke

# Abdominal soft-tissue window (level 40 HU, width 400 HU).
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
# Where a view's direction letters go (axes fractions): its left, right, top and bottom edge.
_EDGES = (
    (0.02, 0.5, {"ha": "left", "va": "center"}),
    (0.98, 0.5, {"ha": "right", "va": "center"}),
    (0.5, 0.98, {"ha": "center", "va": "top"}),
    (0.5, 0.02, {"ha": "center", "va": "bottom"}),
)
_HALO = [withStroke(linewidth=2.5, foreground="black")]  # letters stay readable over bone


@dataclass(frozen=True)
class Outline:
    """One mask to outline: its voxels on the CT grid, a colour and a legend label."""

    mask: np.ndarray
    color: str
    label: str


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    image = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asanyarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def slice_positions_mm(
    affine_ras: np.ndarray, shape: tuple[int, ...], index: tuple[int, int, int]
) -> dict[str, float]:
    """DICOM patient coordinates (LPS, mm) of the sagittal (x), coronal (y) and axial (z) planes of a voxel.

    Args:
        affine_ras: the grid's NIfTI (RAS) affine.
        shape: the grid's shape.
        index: the voxel, in the RAS-reoriented grid of ``nib.as_closest_canonical`` (as the views cut it).
    """
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(shape[:3], dtype=np.uint8), affine_ras))
    x, y, z = nib.affines.apply_affine(canonical.affine, index)
    return {"x": -float(x), "y": -float(y), "z": float(z)}  # RAS to LPS: x and y change sign


def _centre(masks: Sequence[np.ndarray], shape: tuple[int, ...]) -> tuple[int, int, int]:
    for mask in masks:
        if mask.any():
            return tuple(round(float(c)) for c in np.argwhere(mask).mean(axis=0))
    return tuple(n // 2 for n in shape)


def save_orthogonal_views(
    hu: np.ndarray,
    affine_ras: np.ndarray,
    outlines: Sequence[Outline],
    path: str | Path,
    title: str = "",
    window: tuple[float, float] = SOFT_TISSUE_WINDOW,
) -> Path:
    """Write a PNG of axial, coronal and sagittal slices through the first non-empty outline's centre.

    Args:
        hu: CT volume in HU on its grid.
        affine_ras: the grid's NIfTI (RAS) affine.
        outlines: masks on the same grid, drawn as contour lines.
        path: the PNG to write.
        title: figure title.
        window: display window in HU.

    Returns:
        ``path``.
    """
    ct, (sx, sy, sz) = _canonical(np.asarray(hu, dtype=np.float32), affine_ras)
    masks = [_canonical(o.mask.astype(np.uint8), affine_ras)[0] > 0 for o in outlines]
    i, j, k = _centre(masks, ct.shape)
    position = slice_positions_mm(affine_ras, np.shape(hu), (i, j, k))
    # RAS arrays: axis 0 runs to the patient's right, so it is reversed to put the right on the viewer's left.
    # Each view: name, cut, aspect, plane coordinate, patient directions at its (left, right, top, bottom).
    views = (
        ("axial", lambda v: v[::-1, :, k].T, sy / sx, "z", "RLAP"),
        ("coronal", lambda v: v[::-1, j, :].T, sz / sx, "y", "RLSI"),
        ("sagittal", lambda v: v[i, ::-1, :].T, sz / sy, "x", "APSI"),
    )
    figure = Figure(figsize=(12, 4.6), dpi=100, facecolor="black")
    # Narrow margins: the views take the figure's width (matplotlib's default leaves a quarter of it empty).
    axes = figure.subplots(
        1, 3, gridspec_kw={"left": 0.01, "right": 0.99, "wspace": 0.05, "top": 0.86, "bottom": 0.1}
    )
    for ax, (name, cut, aspect, coordinate, directions) in zip(axes, views, strict=True):
        ax.imshow(cut(ct), cmap="gray", vmin=window[0], vmax=window[1], origin="lower", aspect=aspect)
        for outline, mask in zip(outlines, masks, strict=True):
            plane = cut(mask).astype(np.float32)
            if plane.any():
                ax.contour(plane, levels=[0.5], colors=[outline.color], linewidths=1.4)
        for (u, v, align), letter in zip(_EDGES, directions, strict=True):
            ax.text(
                u,
                v,
                letter,
                transform=ax.transAxes,
                color="yellow",
                weight="bold",
                path_effects=_HALO,
                **align,
            )
        ax.set_title(f"{name}, {coordinate} = {position[coordinate]:.1f} mm", color="white", fontsize=10)
        ax.set_axis_off()
    handles = [Line2D([], [], color=o.color, linewidth=2, label=o.label) for o in outlines]
    if handles:
        figure.legend(
            handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white"
        )
    if title:
        figure.suptitle(title, color="white", fontsize=11)
    figure.text(
        0.99, 0.01, "slice positions: DICOM patient coordinates (LPS)", color="#aaa", fontsize=8, ha="right"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, facecolor=figure.get_facecolor())
    return path
