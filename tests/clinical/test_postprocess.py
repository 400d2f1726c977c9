"""Post-processing of a predicted organ: one component, no holes in a slice."""

from __future__ import annotations

import numpy as np

from dose3d_fl.clinical.postprocess import clean_organ_mask, fill_slice_holes, largest_component


def test_largest_component_keeps_the_biggest_blob_only() -> None:
    mask = np.zeros((20, 20, 10), dtype=bool)
    mask[2:10, 2:10, 2:8] = True
    mask[15:17, 15:17, 5:6] = True
    assert np.array_equal(
        largest_component(mask), np.pad(np.ones((8, 8, 6), bool), ((2, 10), (2, 10), (2, 2)))
    )
    assert not largest_component(np.zeros((4, 4, 4), dtype=bool)).any()


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True
    assert largest_component(mask).sum() == 2


def test_holes_are_filled_in_every_slice_along_the_slice_axis() -> None:
    ring = np.zeros((9, 9, 3), dtype=bool)
    ring[2:7, 2:7, :] = True
    ring[4, 4, 1] = False  # a hole in slice 1
    ring[4, 4, 0] = False  # and in slice 0
    filled = fill_slice_holes(ring, axis=2)
    assert filled[2:7, 2:7, :].all() and filled.sum() == 75
    assert clean_organ_mask(ring).sum() == 75
