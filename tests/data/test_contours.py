"""Planar contours <-> voxel masks on one slice (marching squares out, even-odd rasterisation back)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from dose3d_fl.data.contours import mask_from_polygons, polygons_from_field, polygons_from_mask

SHIFTS = [(1e-3, 0.0), (-1e-3, 0.0), (0.0, 1e-3), (0.0, -1e-3)]


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(rows - centre[0], cols - centre[1]) - radius


def _smooth_blob_field(seed: int) -> np.ndarray:
    """Smoothed noise on a random slice size, thresholded at a random level: several blobs, some with holes,
    some cut by the edge."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(8, 48, size=2))
    field = gaussian_filter(rng.normal(size=shape), sigma=rng.uniform(1.5, 3.0))
    return field - np.quantile(field, rng.uniform(0.2, 0.8))


def _assert_closed_polygons_inside_the_slice(polygons: list[np.ndarray], shape: tuple[int, int]) -> None:
    for polygon in polygons:
        assert polygon.ndim == 2 and polygon.shape[1] == 2 and len(polygon) >= 3
        assert not np.array_equal(polygon[0], polygon[-1])  # closed implicitly, first vertex not repeated
        assert (polygon >= -0.5).all()
        assert (polygon <= np.array(shape) - 0.5).all()


@pytest.mark.parametrize("seed", range(8))
def test_random_smooth_blobs_round_trip_exactly(seed: int) -> None:
    field = _smooth_blob_field(seed)
    mask = field < 0
    polygons = polygons_from_field(field)
    _assert_closed_polygons_inside_the_slice(polygons, field.shape)
    np.testing.assert_array_equal(mask_from_polygons(polygons, field.shape), mask)
    np.testing.assert_array_equal(mask_from_polygons(polygons_from_mask(mask), mask.shape), mask)


def test_ring_gives_an_outer_and_an_inner_polygon_and_keeps_its_hole() -> None:
    field = np.maximum(_disc((30, 32), (15.2, 16.1), 10.3), -_disc((30, 32), (15.2, 16.1), 4.6))
    ring = field < 0
    polygons = polygons_from_field(field)
    assert len(polygons) == 2
    back = mask_from_polygons(polygons, ring.shape)
    np.testing.assert_array_equal(back, ring)
    assert not back[15, 16] and back[15, 16 + 7]
    # Either polygon alone fills the hole: the even-odd rule is what cuts it.
    assert all(mask_from_polygons([p], ring.shape)[15, 16] for p in polygons)


def test_island_inside_a_hole_is_kept() -> None:
    centre = (20.3, 19.6)
    outer, hole, island = (_disc((40, 40), centre, r) for r in (16.4, 9.3, 4.2))
    target = (outer < 0) & ~((hole < 0) & ~(island < 0))
    polygons = polygons_from_mask(target)
    assert len(polygons) == 3
    np.testing.assert_array_equal(mask_from_polygons(polygons, target.shape), target)


@pytest.mark.parametrize(
    ("centre", "radius"),
    [
        pytest.param((2.3, 10.4), 6.2, id="top-edge"),
        pytest.param((13.7, 10.4), 6.2, id="bottom-edge"),
        pytest.param((8.1, 1.6), 5.3, id="left-edge"),
        pytest.param((8.1, 20.2), 5.3, id="right-edge"),
        pytest.param((1.2, 0.7), 7.7, id="corner"),
        pytest.param((8.0, 10.5), 40.0, id="whole-slice"),
    ],
)
def test_shape_cut_by_the_image_edge_round_trips(centre: tuple[float, float], radius: float) -> None:
    field = _disc((16, 22), centre, radius)
    mask = field < 0
    polygons = polygons_from_field(field)
    _assert_closed_polygons_inside_the_slice(polygons, field.shape)
    np.testing.assert_array_equal(mask_from_polygons(polygons, field.shape), mask)


def test_interior_contour_keeps_a_margin_around_voxel_centres() -> None:
    field = _disc((16, 22), (8.3, 9.6), 5.45)
    polygons = polygons_from_field(field)
    for shift in SHIFTS:
        shifted = [polygon + np.asarray(shift) for polygon in polygons]
        np.testing.assert_array_equal(mask_from_polygons(shifted, field.shape), field < 0)


@pytest.mark.parametrize(
    ("centre", "radius"), [((2.3, 3.1), 7.2), ((13.3, 18.1), 6.2)], ids=["top-left", "bottom-right"]
)
def test_edge_contour_keeps_a_margin_around_border_voxel_centres(
    centre: tuple[float, float], radius: float
) -> None:
    field = _disc((16, 22), centre, radius)
    polygons = polygons_from_field(field)
    for shift in SHIFTS:
        shifted = [polygon + np.asarray(shift) for polygon in polygons]
        np.testing.assert_array_equal(mask_from_polygons(shifted, field.shape), field < 0)


def test_overlapping_polygons_cancel_where_they_overlap() -> None:
    first = np.array([[0.5, 0.5], [0.5, 5.5], [5.5, 5.5], [5.5, 0.5]])
    second = first + 3.0
    mask = mask_from_polygons([first, second], (10, 10))
    assert mask[1, 1] and mask[7, 7]
    assert not mask[4, 4]
    assert mask.sum() == 25 + 25 - 2 * 4


def test_min_points_and_degenerate_polygons() -> None:
    single = np.zeros((6, 7), dtype=bool)
    single[3, 4] = True
    (diamond,) = polygons_from_mask(single)
    assert len(diamond) == 4
    assert polygons_from_field(0.5 - single.astype(float), min_points=5) == []
    assert not mask_from_polygons([np.array([[1.0, 1.0], [4.0, 4.0]])], (6, 7)).any()
    assert polygons_from_field(np.ones((5, 5))) == []
    assert not mask_from_polygons([], (5, 5)).any()
