"""Synthetic abdominal phantom: anatomy and HU, spleen variability, and fields that match the HU image."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from skimage.draw import polygon2mask
from skimage.measure import find_contours

from dose3d_fl.synth.phantom import STRUCTURE_NAMES, AbdomenPhantom, PhantomValues, sample_phantom

SEEDS = (0, 1, 2)
STEP = 3.0  # mm, isotropic test grid
VOXEL_ML = STEP**3 / 1000.0


@dataclasses.dataclass(frozen=True)
class Scan:
    """A phantom sampled on a regular grid covering its body and scan range."""

    phantom: AbdomenPhantom
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    values: PhantomValues

    def mask(self, name: str) -> np.ndarray:
        return self.values.fields[name] < 0

    def centroid(self, name: str) -> np.ndarray:
        index = np.argwhere(self.mask(name))
        return np.array([axis[index[:, a]].mean() for a, axis in enumerate(self.axes)])


def _grid(lo, hi, step: float) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    axes = tuple(np.arange(lo[a], hi[a] + step / 2, step) for a in range(3))
    return axes, np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)


def _phantom(seed: int) -> AbdomenPhantom:
    return sample_phantom(np.random.default_rng(seed))


@cache
def _scan(seed: int) -> Scan:
    phantom = _phantom(seed)
    width, depth = phantom.body_extent
    z_low, z_high = phantom.z_range
    axes, points = _grid((-width - STEP, -depth - STEP, z_low), (width + STEP, depth + STEP, z_high), STEP)
    return Scan(phantom, axes, phantom.evaluate(points))


@pytest.fixture(params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def scan(request) -> Scan:
    return _scan(request.param)


def _median(scan: Scan, where: np.ndarray) -> float:
    assert where.sum() > 20, "too few voxels to judge"
    return float(np.median(scan.values.hu[where]))


# -- API and geometry


def test_evaluate_returns_float32_hu_and_every_structure(scan: Scan):
    assert {"BODY", "SPLEEN", "LIVER", "KIDNEY_L", "KIDNEY_R"} <= set(STRUCTURE_NAMES)
    shape = tuple(len(axis) for axis in scan.axes)
    assert scan.values.hu.shape == shape and scan.values.hu.dtype == np.float32
    assert set(scan.values.fields) == set(STRUCTURE_NAMES)
    for field in scan.values.fields.values():
        assert field.shape == shape and field.dtype == np.float32
        assert np.isfinite(field).all()


def test_any_leading_shape_gives_the_same_values():
    phantom = _phantom(5)
    _, points = _grid((-60.0, -40.0, -30.0), (90.0, 60.0, 30.0), 6.0)
    grid = phantom.evaluate(points)
    flat = phantom.evaluate(points.reshape(-1, 3).astype(np.float64))
    one = phantom.evaluate(points[3, 4, 5])
    np.testing.assert_array_equal(flat.hu, grid.hu.ravel())
    np.testing.assert_array_equal(flat.fields["SPLEEN"], grid.fields["SPLEEN"].ravel())
    assert one.hu.shape == () and one.hu == grid.hu[3, 4, 5]
    with pytest.raises(ValueError, match="shape"):
        phantom.evaluate(points[..., :2])


def test_scan_range_and_body_size_are_plausible():
    for seed in range(10):
        phantom = _phantom(seed)
        z_low, z_high = phantom.z_range
        assert 200.0 <= z_high - z_low <= 260.0
        width, depth = phantom.body_extent
        assert 135.0 <= width <= 200.0 and 95.0 <= depth <= 150.0


def test_body_lies_inside_its_extent_and_z_range_covers_kidneys_to_lung_bases(scan: Scan):
    body = scan.mask("BODY")
    assert not body[[0, -1]].any() and not body[:, [0, -1]].any()
    kidneys = scan.mask("KIDNEY_L") | scan.mask("KIDNEY_R")
    lungs = scan.mask("LUNG_L") | scan.mask("LUNG_R")
    # Lowest slice below the kidneys' lower poles (or nearly), top slice through the lung bases.
    assert kidneys[:, :, 0].sum() < 0.2 * kidneys.sum(axis=(0, 1)).max()
    assert lungs[:, :, -1].sum() * STEP**2 > 5000.0  # mm^2 of lung on the top slice


def test_structures_do_not_overlap(scan: Scan):
    count = sum(scan.mask(name).astype(np.int8) for name in STRUCTURE_NAMES if name != "BODY")
    assert count.max() == 1
    assert not (count.astype(bool) & ~scan.mask("BODY")).any()


# -- HU


def test_hu_of_tissues_is_realistic(scan: Scan):
    hu, body = scan.values.hu, scan.mask("BODY")
    assert (hu[~body] == -1000.0).all()
    body_field = scan.values.fields["BODY"]
    assert -115.0 < _median(scan, (body_field < -2.0) & (body_field > -5.0)) < -85.0  # subcutaneous fat
    assert -850.0 < _median(scan, scan.mask("LUNG_L") | scan.mask("LUNG_R")) < -750.0
    assert 40.0 <= _median(scan, scan.mask("SPLEEN")) <= 50.0
    assert 50.0 <= _median(scan, scan.mask("LIVER")) <= 65.0
    for kidney in ("KIDNEY_L", "KIDNEY_R"):
        assert 25.0 <= _median(scan, scan.mask(kidney)) <= 40.0
    # Fat (subcutaneous and visceral) is a large share of the body.
    assert ((hu > -115.0) & (hu < -85.0) & body).sum() > 0.15 * body.sum()
    # Gas in stomach or bowel, never as dark as air outside.
    assert (body & (hu < -880.0)).sum() > 10 and hu[body].min() > -995.0


def test_bone_reaches_cortical_hu_in_spine_and_ribs(scan: Scan):
    hu = scan.values.hu
    assert 900.0 <= hu.max() <= 1000.0
    bone = hu >= 400.0
    assert bone.sum() * VOXEL_ML > 40.0
    x = scan.axes[0][:, None, None] - scan.phantom.body_center[0]
    lateral_bone = bone & (np.abs(x) > 90.0)  # ribs, well away from the spine
    assert (lateral_bone & (x > 0)).sum() > 20 and (lateral_bone & (x < 0)).sum() > 20


def test_spleen_hu_is_uniform_soft_tissue(scan: Scan):
    spleen_hu = scan.values.hu[scan.mask("SPLEEN")]
    assert np.abs(spleen_hu - scan.phantom.hu_spleen).max() <= 4.0


def test_spleen_is_wrapped_in_fat(scan: Scan):
    field = scan.values.fields["SPLEEN"]
    ring = (field > 0.0) & (field < 1.5)
    assert ring.sum() > 100
    assert (scan.values.hu[ring] < -50.0).mean() > 0.8


def test_no_hu_window_finds_the_spleen(scan: Scan):
    body, spleen = scan.mask("BODY"), scan.mask("SPLEEN")
    every = np.sort(scan.values.hu[body])
    inside = np.sort(scan.values.hu[spleen])
    edges = np.arange(-200.0, 200.0 + 1.0, 5.0)
    low, high = edges[:, None], edges[None, :]

    def count(values: np.ndarray) -> np.ndarray:
        return np.searchsorted(values, high, side="right") - np.searchsorted(values, low, side="left")

    dice = np.where(high >= low, 2.0 * count(inside) / (count(every) + spleen.sum()), 0.0)
    assert dice.max() < 0.4


def test_body_field_is_negative_exactly_where_there_is_tissue(scan: Scan):
    np.testing.assert_array_equal(scan.mask("BODY"), scan.values.hu > -995.0)


# -- spleen anatomy and variability


def test_spleen_size_position_and_variation():
    volumes = []
    for seed in SEEDS:
        scan = _scan(seed)
        volumes.append(scan.mask("SPLEEN").sum() * VOXEL_ML)
        assert scan.centroid("KIDNEY_L")[2] < scan.centroid("SPLEEN")[2], (
            "the spleen sits above the left kidney"
        )
    assert all(80.0 <= v <= 350.0 for v in volumes), volumes
    assert len({round(v) for v in volumes}) == len(volumes)


def test_spleen_lies_posterior_left_and_under_the_diaphragm(scan: Scan):
    x, y, _ = scan.centroid("SPLEEN")
    assert x - scan.phantom.body_center[0] > 40.0 and y > 0.0
    spleen, lungs = scan.mask("SPLEEN"), scan.mask("LUNG_L") | scan.mask("LUNG_R")
    z = scan.axes[2][None, None, :]
    top_of_spleen = np.where(spleen, z, -np.inf).max(axis=2)
    bottom_of_lung = np.where(lungs, z, np.inf).min(axis=2)
    assert (top_of_spleen < bottom_of_lung).all(), "lung below spleen in some column"
    # Against the ribs of the body wall, but inside it: fat and muscle lie between the spleen and the skin.
    closest = -scan.values.fields["BODY"][spleen].max()  # depth of the spleen's most superficial voxel
    fat, muscle = scan.phantom.subcutaneous_fat_mm, scan.phantom.wall_muscle_mm
    assert 0.7 * fat + muscle < closest < 1.3 * fat + muscle + 20.0


def _spleen_box_scan(seed: int, step: float) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    phantom = _phantom(seed)
    center = np.asarray(phantom.spleen.center)
    axes, points = _grid(center - 90.0, center + 90.0, step)
    return axes, phantom.evaluate(points).fields["SPLEEN"]


def test_spleen_shape_is_not_an_ellipsoid():
    ratios = []
    for seed in SEEDS:
        axes, field = _spleen_box_scan(seed, 2.0)
        mask = field < 0
        assert not mask[[0, -1]].any() and not mask[:, [0, -1]].any() and not mask[:, :, [0, -1]].any()
        points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        inside = points[mask]
        center = inside.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov((inside - center).T))
        # The solid ellipsoid with the same second moments has half-axes sqrt(5 * eigenvalue).
        local = (points - center) @ eigenvectors / np.sqrt(5.0 * eigenvalues)
        ellipsoid = (local**2).sum(axis=-1) <= 1.0
        dice = 2.0 * (ellipsoid & mask).sum() / (ellipsoid.sum() + mask.sum())
        assert dice < 0.95, f"seed {seed}: spleen is too close to an ellipsoid (Dice {dice:.3f})"
        ratios.append(np.sqrt(eigenvalues / eigenvalues.max()))
    assert min(np.abs(a - b).max() for i, a in enumerate(ratios) for b in ratios[i + 1 :]) > 0.01


def test_spleen_field_is_distance_like_near_its_boundary():
    _, field = _spleen_box_scan(0, 1.0)
    gradient = np.sqrt(sum(g**2 for g in np.gradient(field, 1.0)))
    near = np.abs(field) < 1.5
    assert near.sum() > 1000
    assert 0.8 < np.median(gradient[near]) < 1.3
    assert np.percentile(gradient[near], 1) > 0.3
    assert np.percentile(gradient[near], 99) < 3.0


# -- contours


def _mask_from_contours(field: np.ndarray) -> np.ndarray:
    """Rasterise the zero-level contours of a 2D field (even-odd rule), as an RTSTRUCT exporter would."""
    padded = np.pad(field.astype(np.float64), 1, constant_values=1e6)
    mask = np.zeros(padded.shape, dtype=bool)
    for contour in find_contours(-padded, level=0.0):
        mask ^= polygon2mask(padded.shape, contour)
    return mask[1:-1, 1:-1]


@pytest.mark.parametrize("name", ["SPLEEN", "BODY", "KIDNEY_L", "LIVER"])
def test_contours_reproduce_the_mask(name: str):
    scan = _scan(1)
    field = scan.values.fields[name]
    slices = np.flatnonzero((field < 0).any(axis=(0, 1)))[::2]
    overlap = total = 0
    for k in slices:
        truth = field[:, :, k] < 0
        drawn = _mask_from_contours(field[:, :, k])
        overlap += (truth & drawn).sum()
        total += truth.sum() + drawn.sum()
    assert 2.0 * overlap / total >= 0.97


# -- determinism


def test_same_seed_gives_identical_phantom_and_values():
    assert _phantom(7) == _phantom(7)
    assert _phantom(7) != _phantom(8)
    _, points = _grid((-150.0, -110.0, -60.0), (150.0, 110.0, 60.0), 8.0)
    first, second = _phantom(7).evaluate(points), _phantom(7).evaluate(points)
    np.testing.assert_array_equal(first.hu, second.hu)
    for name in STRUCTURE_NAMES:
        np.testing.assert_array_equal(first.fields[name], second.fields[name])
