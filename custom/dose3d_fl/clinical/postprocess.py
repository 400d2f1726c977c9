"""Clean a predicted organ mask: one connected component, no holes in any CT slice.

Both steps are MONAI transforms (``KeepLargestConnectedComponent``, ``FillHoles``). The only hand-written
part is the loop over slices: ``FillHoles`` fills holes in all spatial dimensions at once and has no
per-slice mode, while contours are drawn, and holes judged, slice by slice.

Connectivity: the organ is 26-connected in 3D (diagonal neighbours belong to it), and a hole is background
that no 4-connected path in its slice joins to the slice border, the complementary pair of connectivities
(a hole enclosed by a diagonal step of the contour is still a hole).
"""

from __future__ import annotations

import numpy as np
from monai.transforms import FillHoles, KeepLargestConnectedComponent

# Full connectivity of a 3D mask (26 neighbours); ``None`` would mean the same, spelled out for the reader.
_LARGEST = KeepLargestConnectedComponent(applied_labels=1, is_onehot=False, connectivity=3)
# A background pixel joined to the slice border only through a diagonal step is still enclosed.
_FILL_SLICE = FillHoles(applied_labels=1, connectivity=1)


def _as_mask(result: object) -> np.ndarray:
    """The single channel of a MONAI result (array, tensor or MetaTensor) as a numpy boolean array."""
    return np.asarray(result)[0].astype(bool, copy=False)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D boolean mask (an empty mask stays empty).

    The input is not modified. Of two largest components of equal size, MONAI keeps one; which is not
    specified (the other is dropped).
    """
    # MONAI edits its input in place (a numpy array is shared with the tensor), so hand it a copy.
    channel = np.array(mask, dtype=np.uint8, copy=True)[None]
    return _as_mask(_LARGEST(channel))


def fill_slice_holes(mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Fill holes in every 2D slice along ``axis`` (the CT's slice axis, where contours are drawn).

    A 3D cavity shows as a hole in at least one slice, so this also fills every 3D hole.
    """
    filled = np.moveaxis(np.array(mask, dtype=np.uint8, copy=True), axis, 0)
    for k in np.flatnonzero(filled.any(axis=(1, 2))):
        filled[k] = _as_mask(_FILL_SLICE(filled[k][None]))
    return np.moveaxis(filled, 0, axis).astype(bool)


def clean_organ_mask(mask: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """Largest connected component, then hole filling per slice."""
    return fill_slice_holes(largest_component(np.asarray(mask, dtype=bool)), slice_axis)
