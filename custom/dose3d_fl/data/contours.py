"""Planar contours <-> voxel masks on one CT slice.

Contours follow the RTSTRUCT CLOSED_PLANAR convention used by treatment planning systems: a slice may
hold several closed polygons and a voxel is inside the structure when its centre lies inside an odd number
of them (even-odd rule), so an inner polygon cuts a hole.
"""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon2mask
from skimage.measure import find_contours


def polygons_from_field(field: np.ndarray, min_points: int = 3) -> list[np.ndarray]:
    """Closed polygons along the zero level of a 2D field (negative inside).

    The field is padded with an "outside" border so that a structure cut by the image edge still
    yields a closed polygon (running along the edge). Contours are found with marching squares and
    linear interpolation between voxel centres, so the sign of the field at every voxel centre is
    reproduced by :func:`mask_from_polygons`.

    Args:
        field: ``(rows, columns)`` array; ``< 0`` inside the structure.
        min_points: polygons with fewer vertices are dropped.

    Returns:
        List of ``(N, 2)`` float arrays of ``(row, column)`` vertices, first vertex not repeated.
    """
    padded = np.pad(np.asarray(field, dtype=np.float64), 1, mode="edge")
    # Mirror the border outward: a structure touching the edge is closed half a voxel beyond the border
    # voxel centres (on the image boundary), so rounding in the DICOM file cannot move it inside them.
    border = np.ones(padded.shape, dtype=bool)
    border[1:-1, 1:-1] = False
    padded[border] = np.abs(padded[border]) + 1e-6
    rows, cols = field.shape
    polygons = []
    for contour in find_contours(-padded, level=0.0):
        contour = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(contour) < min_points:
            continue
        contour = contour - 1.0
        contour[:, 0] = np.clip(contour[:, 0], -0.5, rows - 0.5)
        contour[:, 1] = np.clip(contour[:, 1], -0.5, cols - 0.5)
        polygons.append(contour)
    return polygons


def polygons_from_mask(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons around the voxels of a binary 2D mask (see :func:`polygons_from_field`)."""
    return polygons_from_field(0.5 - np.asarray(mask, dtype=np.float64))


def mask_from_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise closed polygons with the even-odd rule: a voxel is set when its centre is inside.

    Args:
        polygons: ``(N, 2)`` arrays of ``(row, column)`` vertices.
        shape: ``(rows, columns)`` of the slice.

    Returns:
        Boolean ``(rows, columns)`` mask.
    """
    mask = np.zeros(shape, dtype=bool)
    for polygon in polygons:
        if len(polygon) >= 3:
            mask ^= polygon2mask(shape, polygon)
    return mask
