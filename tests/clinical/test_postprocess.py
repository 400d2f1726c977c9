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


def test_a_hole_closed_by_a_diagonal_step_is_filled_and_the_input_is_kept() -> None:
    # A ring whose corners are diagonal steps: its inside touches the outside only diagonally.
    ring = np.zeros((7, 7, 1), dtype=bool)
    for x, y in [
        (1, 2),
        (1, 3),
        (1, 4),
        (2, 1),
        (2, 5),
        (3, 1),
        (3, 5),
        (4, 1),
        (4, 5),
        (5, 2),
        (5, 3),
        (5, 4),
    ]:
        ring[x, y, 0] = True
    before = ring.copy()
    assert fill_slice_holes(ring).sum() == 21
    assert clean_organ_mask(ring).sum() == 21 and largest_component(ring).sum() == 12
    assert np.array_equal(ring, before)


def test_a_hole_open_along_the_slice_axis_is_filled_in_its_slices() -> None:
    tube = np.zeros((7, 7, 5), dtype=bool)
    tube[1:6, 1:6, :] = True
    tube[3, 3, :] = False  # open at both ends of the slice axis: no 3D cavity, a hole in every slice
    assert fill_slice_holes(tube, axis=2).all(axis=2)[1:6, 1:6].all()
    assert fill_slice_holes(tube, axis=0).sum() == tube.sum()  # across the tube no slice has a hole
