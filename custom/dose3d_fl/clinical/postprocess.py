"""Clean a predicted organ mask: one connected component, no holes in any CT slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (an empty mask stays empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_slice_holes(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Fill holes in every 2D slice along ``axis`` (the CT's slice axis, where contours are drawn).

    A 3D cavity shows as a hole in at least one slice, so this also fills every 3D hole.
    """
    filled = np.moveaxis(np.array(mask, dtype=bool, copy=True), axis, 0)
    for k in np.flatnonzero(filled.any(axis=(1, 2))):
        filled[k] = ndimage.binary_fill_holes(filled[k])
    return np.moveaxis(filled, 0, axis)


def clean_organ_mask(mask: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Largest connected component, then hole filling per slice."""
    return fill_slice_holes(largest_component(np.asarray(mask, dtype=bool)), slice_axis)
