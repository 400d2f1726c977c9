"""Synthetic non-contrast abdominal CT phantom in continuous patient coordinates.

Conventions: DICOM LPS millimetres (+x to the patient's left, +y posterior, +z superior); the body is
centred near x = y = 0 and z = 0 lies near the splenic hilum. Each structure is a smooth, roughly
signed-distance field in millimetres (negative inside), and tissue HU are painted from the same fields, so
the masks ``fields[name] < 0`` agree with the HU image on any grid. Organs evaluated as structures never
overlap; the spleen is wrapped in a fat plane, so finding it needs shape and position, not a HU window. The
phantom is noise-free: the scanner simulation adds noise, blur and calibration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STRUCTURE_NAMES: tuple[str, ...] = (
    "BODY",
    "LUNG_L",
    "LUNG_R",
    "LIVER",
    "SPLEEN",
    "STOMACH",
    "PANCREAS",
    "KIDNEY_L",
    "KIDNEY_R",
    "AORTA",
    "IVC",
)

Vec3 = tuple[float, float, float]

_AIR_HU = -1000.0
_GAS_HU = -900.0
_GI_FLUID_HU = 15.0
_BOWEL_WALL_HU = 35.0
_STOMACH_WALL_HU = 40.0
_HEART_HU = 40.0
_LUNG_VESSEL_HU = 35.0
_CSF_HU = 20.0
_DISC_HU = 90.0
_CANCELLOUS_HU = 400.0
_POSTERIOR_ELEMENT_HU = 750.0
_RIB_MARROW_HU = 620.0
_CORTEX_HU = 950.0
_CORTEX_MM = 1.8

# Texture amplitudes (HU). Muscle varies more than the spleen so that no HU window separates them.
_TEXTURE_ORGAN = 3.0
_TEXTURE_LIVER = 4.0
_TEXTURE_MUSCLE = 10.0
_TEXTURE_FAT = 5.0
_TEXTURE_LUNG = 20.0
_TEXTURE_BONE = 25.0

# Structures are evaluated only inside a box reaching this far (mm) beyond them; elsewhere their field is
# this margin, a lower bound, which keeps the sign and the values near the boundary exact.
_MARGIN = 8.0
# Fat plane (mm) between neighbouring organs other than the spleen, which has its own per-patient plane.
_ORGAN_GAP = 2.0
_MEDIASTINUM_HALF_WIDTH = 14.0
_DOME_ANTERIOR_FLATTENING = 0.6
_RIB_START_ANGLE = 0.5  # radians from the posterior midline, lateral to the paraspinal muscles
_RIB_HALF_DEPTH = 4.5
_RIB_HALF_HEIGHT = 6.5


@dataclass(frozen=True)
class _Ellipsoid:
    """An ellipsoid: centre, half-axes along the rows of ``frame`` (orthonormal unit vectors), in mm."""

    center: Vec3
    half_axes: Vec3
    frame: tuple[Vec3, Vec3, Vec3]

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        return tuple(e[0] * dx + e[1] * dy + e[2] * dz for e in self.frame)

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return _ellipsoid_field(self.local(x, y, z), self.half_axes)

    def bounds(self, pad: float) -> tuple[np.ndarray, np.ndarray]:
        scaled = np.asarray(self.frame) * np.asarray(self.half_axes)[:, None]
        half = np.sqrt((scaled**2).sum(axis=0)) + pad
        return np.asarray(self.center) - half, np.asarray(self.center) + half


@dataclass(frozen=True)
class _Tube:
    """A tube along a polyline whose radius varies linearly along each segment (mm)."""

    points: tuple[Vec3, ...]
    radii: tuple[float, ...]

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, blend: float = 6.0) -> np.ndarray:
        """Blended union of the segments; each is evaluated only near itself, elsewhere a lower bound."""
        pad = _MARGIN + 2.0 * blend
        result = np.full_like(x, pad)
        for (p0, p1), (r0, r1) in zip(_pairs(self.points), _pairs(self.radii), strict=True):
            lo = np.minimum(p0, p1) - max(r0, r1) - pad
            hi = np.maximum(p0, p1) + max(r0, r1) + pad
            near = np.flatnonzero(
                (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
            )
            cone = _segment_distance(x[near], y[near], z[near], p0, p1, r0, r1)
            result[near] = _smin(result[near], cone, blend)
        return result

    def bounds(self, pad: float) -> tuple[np.ndarray, np.ndarray]:
        points, radii = np.asarray(self.points), np.asarray(self.radii)[:, None]
        return (points - radii).min(axis=0) - pad, (points + radii).max(axis=0) + pad


@dataclass(frozen=True)
class PhantomValues:
    """The phantom sampled at a set of points.

    Args:
        hu: float32 noise-free tissue HU, same leading shape as the points.
        fields: float32 field per name in :data:`STRUCTURE_NAMES`; ``< 0`` inside, ``> 0`` outside,
            roughly the signed distance to the boundary in mm near it.
    """

    hu: np.ndarray
    fields: dict[str, np.ndarray]


@dataclass(frozen=True)
class AbdomenPhantom:
    """Every randomly drawn anatomical parameter of one patient (mm, LPS, HU); draw with :func:`sample_phantom`.

    Shapes: ``_Ellipsoid`` (centre, half-axes, orthonormal frame) and ``_Tube`` (polyline with radii).

    Args:
        body_center: (x, y) centre of the body cross-section.
        body_half_width: half-width (x) at the centre of the scan range.
        body_half_depth_anterior: half-depth towards the anterior skin.
        body_half_depth_posterior: half-depth towards the back, before the back is flattened on the table.
        back_flattening: fraction of the posterior half-depth where the flat back begins.
        body_taper: relative change of the cross-section per 100 mm along z (linear, quadratic).
        subcutaneous_fat_mm: mean subcutaneous fat thickness (thicker anteriorly, thinner at the back).
        wall_muscle_mm: thickness of the muscular body wall.
        z_min: lower end of the scanned range (below the kidneys).
        z_max: upper end of the scanned range (above the diaphragm dome).
        vertebral_body: (x, y, half-width, half-depth) of the vertebral body cross-section.
        spinal_canal_radius: radius of the spinal canal.
        vertebral_level_mm: craniocaudal height of one vertebra plus its disc.
        disc_phase_mm: z offset of the discs.
        psoas_top_z: where the psoas muscles begin (they widen caudally).
        domes: (x, y, top z) of the left and right diaphragm domes.
        dome_radius: horizontal distance from a dome centre to the posterior costophrenic recess.
        dome_depth: how far the diaphragm descends from a dome top to the recess.
        diaphragm_mm: diaphragm muscle thickness.
        rib_start_z: (left, right) posterior z of the lowest rib.
        rib_spacing: vertical spacing of the ribs at the back.
        rib_descent: how far a rib descends from the back to the flank.
        rib_count: ribs per side.
        heart: the heart, resting on the central diaphragm.
        lung_vessels: straight vessels in the lungs, each (x, y, z, direction x, y, z, radius).
        spleen: spleen ellipsoid before bending and lobulation; frame rows are the long axis, the width
            axis and the outward (diaphragmatic) normal.
        spleen_bend: crescent curvature (1/mm) along the long and the width axis, concave towards the hilum.
        spleen_lobulation: coefficients (mm) of smooth second/third-order radial perturbations.
        spleen_fat_mm: thickness of the fat plane around the spleen.
        liver_left_edge: (x, y) anterior and (x, y) posterior point of the liver's left boundary.
        liver_inferior: (x, z) of the right-lobe tip and the slopes of the inferior surface along x and y.
        kidneys: left and right kidney; frame rows are the long axis, the hilum direction and the third axis.
        aorta: (x, y, radius, dx/dz, dy/dz).
        ivc: (x, y, half-width, half-depth, top z).
        pancreas: from the head to the tail at the splenic hilum.
        stomach: from the fundus to the pylorus.
        stomach_wall_mm: stomach wall thickness.
        stomach_gas_level: y of the air-fluid level (gas lies anterior to it, supine patient).
        bowel_loops: colon and small bowel loops.
        bowel_gas_levels: air-fluid level y of each loop.
        hu_fat: fat HU.
        hu_muscle: muscle HU.
        hu_liver: liver HU.
        hu_spleen: spleen HU.
        hu_kidney: renal parenchyma HU.
        hu_blood: unenhanced blood HU.
        hu_pancreas: pancreas HU.
        hu_lung: aerated lung HU.
        texture_waves: low-frequency texture, each (kx, ky, kz, phase); the first three shape organs, the
            others fat and muscle.
    """

    body_center: tuple[float, float]
    body_half_width: float
    body_half_depth_anterior: float
    body_half_depth_posterior: float
    back_flattening: float
    body_taper: tuple[float, float]
    subcutaneous_fat_mm: float
    wall_muscle_mm: float
    z_min: float
    z_max: float
    vertebral_body: tuple[float, float, float, float]
    spinal_canal_radius: float
    vertebral_level_mm: float
    disc_phase_mm: float
    psoas_top_z: float
    domes: tuple[Vec3, Vec3]
    dome_radius: float
    dome_depth: float
    diaphragm_mm: float
    rib_start_z: tuple[float, float]
    rib_spacing: float
    rib_descent: float
    rib_count: int
    heart: _Ellipsoid
    lung_vessels: tuple[tuple[float, ...], ...]
    spleen: _Ellipsoid
    spleen_bend: tuple[float, float]
    spleen_lobulation: tuple[float, ...]
    spleen_fat_mm: float
    liver_left_edge: tuple[float, float, float, float]
    liver_inferior: tuple[float, float, float, float]
    kidneys: tuple[_Ellipsoid, _Ellipsoid]
    aorta: tuple[float, float, float, float, float]
    ivc: tuple[float, float, float, float, float]
    pancreas: _Tube
    stomach: _Tube
    stomach_wall_mm: float
    stomach_gas_level: float
    bowel_loops: tuple[_Tube, ...]
    bowel_gas_levels: tuple[float, ...]
    hu_fat: float
    hu_muscle: float
    hu_liver: float
    hu_spleen: float
    hu_kidney: float
    hu_blood: float
    hu_pancreas: float
    hu_lung: float
    texture_waves: tuple[tuple[float, float, float, float], ...]

    @property
    def z_range(self) -> tuple[float, float]:
        """Craniocaudal extent (mm) of an abdominal CT of this patient: kidneys to lung bases."""
        return self.z_min, self.z_max

    @property
    def body_extent(self) -> tuple[float, float]:
        """Largest |x| and |y| (mm) of the skin over :attr:`z_range`."""
        scale = _taper(np.linspace(self.z_min, self.z_max, 65), self.body_taper).max()
        depth = max(self.body_half_depth_anterior, self.body_half_depth_posterior)
        return (
            float(abs(self.body_center[0]) + self.body_half_width * scale),
            float(abs(self.body_center[1]) + depth * scale),
        )

    def evaluate(self, points: np.ndarray) -> PhantomValues:
        """Sample HU and structure fields at patient positions.

        Args:
            points: float array ``(..., 3)`` of LPS millimetres.

        Returns:
            HU and fields with the points' leading shape.

        Raises:
            ValueError: if ``points`` does not end in a dimension of 3.
        """
        points = np.asarray(points)
        if points.ndim < 1 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (..., 3) in LPS mm, got {points.shape}")
        leading = points.shape[:-1]
        flat = points.reshape(-1, 3)
        x, y, z = (np.ascontiguousarray(flat[:, axis], dtype=np.float32) for axis in range(3))
        hu, fields = _Scene(self, x, y, z).render()
        return PhantomValues(
            hu=hu.reshape(leading), fields={name: fields[name].reshape(leading) for name in STRUCTURE_NAMES}
        )


# --------------------------------------------------------------------------------------------- fields


def _pairs(items: tuple) -> list[tuple]:
    return list(itertools.pairwise(items))


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum: ``max(a, b)`` where ``|a - b| >= k``, rounded (by at most k/4) where they meet."""
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.maximum(a, b) + h * h * (0.25 / k)


def _round_max(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Intersection with a circular fillet of radius r: still a distance where the surfaces meet at an angle."""
    ua = np.maximum(a + r, 0.0)
    ub = np.maximum(b + r, 0.0)
    return np.minimum(np.maximum(a, b), -r) + np.sqrt(ua * ua + ub * ub)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.minimum(a, b) - h * h * (0.25 / k)


def _ellipsoid_field(coords: tuple[np.ndarray, ...], half_axes: tuple) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse or ellipsoid (exact on the boundary).

    Uses ``k0 (k0 - 1) / k1`` with ``k0 = |p / a|`` and ``k1 = |p / a^2|``; the small offsets make the
    centre, where both vanish, finite (about minus the smallest half-axis) instead of 0/0.
    """
    k0 = None
    k1 = None
    for c, a in zip(coords, half_axes, strict=True):
        q = c / a
        k0 = q * q if k0 is None else k0 + q * q
        q = q / a
        k1 = q * q if k1 is None else k1 + q * q
    k0 = np.sqrt(k0)
    k1 = np.sqrt(k1)
    smallest = min((float(np.min(a)) for a in half_axes if np.size(a)), default=1.0)
    return (k0 - 1.0) * (k0 + 1e-6) / (k1 + 1e-6 / smallest)


def _rounded_ellipse(x: np.ndarray, y: np.ndarray, a: float | np.ndarray, b: float) -> np.ndarray:
    """Cheap distance-like field of a near-circular ellipse: the scaled radial coordinate (for muscles)."""
    return (np.sqrt((x * x) * (1.0 / (a * a)) + (y * y) * (1.0 / (b * b))) - 1.0) * np.sqrt(a * b)


def _segment_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, p0: Vec3, p1: Vec3, r0: float, r1: float
) -> np.ndarray:
    """Distance to the segment p0-p1 minus the radius interpolated along it (a rounded cone)."""
    d = np.subtract(p1, p0)
    length2 = float(d @ d)
    dx, dy, dz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) * (1.0 / length2), 0.0, 1.0)
    dx -= t * d[0]
    dy -= t * d[1]
    dz -= t * d[2]
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (r0 + t * (r1 - r0))


def _segment_distance_2d(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float
) -> np.ndarray:
    d = np.subtract(p1, p0)
    dx, dy = x - p0[0], y - p0[1]
    t = np.clip((dx * d[0] + dy * d[1]) * (1.0 / float(d @ d)), 0.0, 1.0)
    return np.hypot(dx - t * d[0], dy - t * d[1]) - radius


def _texture(x: np.ndarray, y: np.ndarray, z: np.ndarray, waves: tuple) -> np.ndarray:
    """Smooth pattern in [-1, 1]: the mean of a few plane waves."""
    total = np.zeros_like(x)
    for kx, ky, kz, phase in waves:
        total += np.sin(x * kx + y * ky + z * kz + phase)
    total *= 1.0 / len(waves)
    return total


def _taper(z: np.ndarray, taper: tuple[float, float]) -> np.ndarray:
    """Scale of the body cross-section along z (the body is a little wider towards chest or pelvis)."""
    t = np.clip(z * 0.01, -1.6, 1.6)
    return 1.0 + t * (taper[0] + t * taper[1])


def _body_field(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Skin: an ellipse with separate anterior/posterior depths and a back flattened against the table."""
    scale = _taper(z, ph.body_taper)
    dx = x - ph.body_center[0]
    dy = y - ph.body_center[1]
    # Anterior and posterior half-depths differ; the sign picks one without a slow np.where.
    anterior, posterior = ph.body_half_depth_anterior, ph.body_half_depth_posterior
    depth = np.sign(dy)
    depth *= 0.5 * (posterior - anterior)
    depth += 0.5 * (posterior + anterior)
    ellipse = _ellipsoid_field((dx, dy), (ph.body_half_width * scale, depth * scale))
    back = dy - (ph.back_flattening * ph.body_half_depth_posterior) * scale
    return _smax(ellipse, back, 25.0)


def _subcutaneous_fat(ph: AbdomenPhantom, y: np.ndarray) -> np.ndarray:
    """Subcutaneous fat thickness: 30% thicker anteriorly and 30% thinner at the back than the mean."""
    anterior = np.clip((ph.body_center[1] - y) * 0.01, -1.0, 1.0)
    return ph.subcutaneous_fat_mm * (1.0 + 0.3 * anterior)


def _dome_height(
    dome: Vec3, radius: float, depth: float, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Height of one diaphragm dome and its slope; it descends steeply into the costophrenic recess."""
    dx = x - dome[0]
    dy = y - dome[1]
    dy = np.maximum(dy, dy * _DOME_ANTERIOR_FLATTENING)  # flatter anteriorly (dy < 0)
    r2 = (dx * dx + dy * dy) * (1.0 / radius**2)
    height = dome[2] - depth * r2 * (0.3 + 0.7 * r2)
    slope = (depth / radius) * np.sqrt(r2) * (0.6 + 2.8 * r2)
    return height, slope


def _diaphragm_height(
    domes: tuple[Vec3, Vec3], radius: float, depth: float, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Height of the diaphragm mid-surface (the smooth maximum of both domes) and its slope."""
    left, slope_left = _dome_height(domes[0], radius, depth, x, y)
    right, slope_right = _dome_height(domes[1], radius, depth, x, y)
    blend = 25.0
    # The slope of the smooth maximum is the weighted slope of the domes, so a field normalised by it stays
    # continuous where the two domes meet.
    weight = np.clip(0.5 + (left - right) * (0.5 / blend), 0.0, 1.0)
    return _smax(left, right, blend), slope_right + weight * (slope_left - slope_right)


def _diaphragm_distance(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) above the diaphragm mid-surface (positive in the thorax)."""
    height, slope = _diaphragm_height(ph.domes, ph.dome_radius, ph.dome_depth, x, y)
    return (z - height) / np.sqrt(1.0 + slope * slope)


def _spleen_raw(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Bent, lobulated ellipsoid; the bend makes a crescent whose concave side is the hilum."""
    u, v, w = ph.spleen.local(x, y, z)
    bend_u, bend_v = ph.spleen_bend
    w = w + bend_u * u * u + bend_v * v * v
    a, b, c = ph.spleen.half_axes
    field = _ellipsoid_field((u, v, w), (a, b, c))
    nu, nv, nw = u * (1.0 / a), v * (1.0 / b), w * (1.0 / c)
    inverse = 1.0 / np.sqrt(nu * nu + nv * nv + nw * nw + 1e-6)
    nu *= inverse
    nv *= inverse
    nw *= inverse
    harmonics = (
        nu * nv,
        nv * nw,
        nu * nw,
        nu * nu - nv * nv,
        2.0 * nw * nw - nu * nu - nv * nv,
        nu * nv * nw,
    )
    for coefficient, harmonic in zip(ph.spleen_lobulation, harmonics, strict=True):
        field -= coefficient * harmonic
    # The bend is a shear, which squeezes or stretches distances: divide by the gradient magnitude the
    # shear gives the ellipsoid's normal, so the field stays close to a distance in patient millimetres.
    gu, gv, gw = u * (1.0 / a**2), v * (1.0 / b**2), w * (1.0 / c**2)
    gu += (2.0 * bend_u) * u * gw
    gv += (2.0 * bend_v) * v * gw
    unbent = u * u * (1.0 / a**4) + v * v * (1.0 / b**4) + w * w * (1.0 / c**4)
    return field * np.sqrt((unbent + 1e-12) / (gu * gu + gv * gv + gw * gw + 1e-12))


def _spleen_bounds(ph: AbdomenPhantom) -> tuple[np.ndarray, np.ndarray]:
    """World box around the spleen: the bent ellipsoid's surface sampled, padded for the lobulation."""
    a, b, c = ph.spleen.half_axes
    theta, phi = np.meshgrid(np.linspace(0.0, math.pi, 25), np.linspace(0.0, 2.0 * math.pi, 49))
    u = a * np.sin(theta) * np.cos(phi)
    v = b * np.sin(theta) * np.sin(phi)
    w = c * np.cos(theta) - ph.spleen_bend[0] * u * u - ph.spleen_bend[1] * v * v
    local = np.stack([u.ravel(), v.ravel(), w.ravel()], axis=1)
    world = np.asarray(ph.spleen.center) + local @ np.asarray(ph.spleen.frame)
    # Lobulation moves the surface by at most 2 sum|c| in bent coordinates, and the bend stretches that by
    # less than 2; the sampled extremes lie within a millimetre of the true ones.
    pad = 4.0 * float(np.abs(ph.spleen_lobulation).sum()) + 1.0 + _MARGIN
    return world.min(axis=0) - pad, world.max(axis=0) + pad


def _kidney_sinus(kidney: _Ellipsoid) -> _Ellipsoid:
    """Renal sinus fat: an ellipsoid opening through the hilum (the medial-anterior side)."""
    length, width, depth = kidney.half_axes
    hilum = np.asarray(kidney.frame[1])
    center = np.asarray(kidney.center) + 0.6 * width * hilum
    return _Ellipsoid(
        center=_vec(center), half_axes=(0.5 * length, 0.45 * width, 0.42 * depth), frame=kidney.frame
    )


# --------------------------------------------------------------------------------------------- painting


class _Scene:
    """One evaluation: fields are built outside-in (skin, wall, cavity, organs) and HU painted in that order.

    Everything below the skin is computed on the points inside the body only, and each structure only on
    the points inside its bounding box. Structure fields are clipped against the structures of higher
    priority (leaving a fat plane), so no two structures overlap and every mask matches the painted HU.
    """

    def __init__(self, ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.ph = ph
        self.body = _body_field(ph, x, y, z)
        self.inside = np.flatnonzero(self.body < 0)
        self.x, self.y, self.z = x[self.inside], y[self.inside], z[self.inside]
        self.span = [
            (float(c.min()), float(c.max()), max(float(c.max() - c.min()), 1.0))
            if c.size
            else (0.0, 0.0, 1.0)
            for c in (self.x, self.y, self.z)
        ]
        self.hu = np.empty_like(self.x)
        self.texture = _texture(self.x, self.y, self.z, ph.texture_waves[:3])
        self.texture_wall = _texture(self.x, self.y, self.z, ph.texture_waves[3:])
        # Per structure: the points (indices into the body's points) where it was evaluated, and its values
        # there; elsewhere its field is the margin, a lower bound.
        self.parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.full_fields: dict[str, np.ndarray] = {}

    def render(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._body_wall()
        self._spine()
        self._ribs()
        self._diaphragm()
        self._structures()
        self._paint_thorax()
        self._paint_abdomen()
        hu = np.full(self.body.shape, _AIR_HU, dtype=np.float32)
        hu[self.inside] = self.hu
        fields = {"BODY": self.body}
        for name in STRUCTURE_NAMES[1:]:
            selected, values = self.parts[name]
            field = np.full_like(self.body, _MARGIN)
            field[self.inside[selected]] = values
            fields[name] = field
        return hu, fields

    # -- helpers

    def _box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Indices of the points inside a box, searched along its most selective axis first."""
        coords = (self.x, self.y, self.z)
        cover = [
            (min(hi[a], self.span[a][1]) - max(lo[a], self.span[a][0])) / self.span[a][2] for a in range(3)
        ]
        first = int(np.argmin(cover))
        selected = np.flatnonzero((coords[first] >= lo[first]) & (coords[first] <= hi[first]))
        for axis in range(3):
            if axis != first:
                coord = coords[axis][selected]
                selected = selected[(coord >= lo[axis]) & (coord <= hi[axis])]
        return selected

    def _at(self, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.x[selected], self.y[selected], self.z[selected]

    def _field_at(self, name: str, selected: np.ndarray) -> np.ndarray:
        """A structure's field at some of the body's points (the margin where it was not evaluated)."""
        if name not in self.full_fields:
            own, values = self.parts[name]
            full = np.full_like(self.x, _MARGIN)
            full[own] = values
            self.full_fields[name] = full
        return self.full_fields[name][selected]

    def _structure(
        self,
        name: str,
        bounds: tuple[np.ndarray, np.ndarray],
        raw: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
        container: np.ndarray,
        above: tuple[str, ...],
        gaps: dict[str, float] | None = None,
    ) -> None:
        """Evaluate a structure in its box, inside ``container`` and clear of the ``above`` structures."""
        selected = self._box(*bounds)
        values = raw(*self._at(selected))
        np.maximum(values, container[selected] + _ORGAN_GAP * 0.5, out=values)
        # Clipping only raises the field: where it already exceeds the margin, the margin is a lower bound.
        keep = values < _MARGIN
        selected, values = selected[keep], values[keep]
        for other in above:
            gap = (gaps or {}).get(other, self.ph.spleen_fat_mm if other == "SPLEEN" else _ORGAN_GAP)
            np.maximum(values, gap - self._field_at(other, selected), out=values)
        self.parts[name] = (selected, values)

    def _inside(self, name: str) -> np.ndarray:
        selected, values = self.parts[name]
        return selected[values < 0]

    def _paint(
        self, index: np.ndarray, base: float, texture: np.ndarray | None = None, amp: float = 0.0
    ) -> None:
        self.hu[index] = base if texture is None else base + amp * texture[index]

    # -- layers

    def _body_wall(self) -> None:
        ph = self.ph
        self.depth = self.body[self.inside]
        self.subcutaneous = _subcutaneous_fat(ph, self.y)
        below_fat = self.depth + self.subcutaneous
        self.hu[:] = ph.hu_fat + _TEXTURE_FAT * self.texture_wall
        self._paint(np.flatnonzero(below_fat < 0), ph.hu_muscle, self.texture_wall, _TEXTURE_MUSCLE)
        self.inner = below_fat + ph.wall_muscle_mm

    def _spine(self) -> None:
        """Spine, paraspinal, psoas and quadratus muscles: a muscular block the organs stay out of."""
        ph = self.ph
        vx, vy, half_width, half_depth = ph.vertebral_body
        canal = ph.spinal_canal_radius
        cy = vy + half_depth + canal + 1.5
        selected = self._box(
            np.array([vx - 115.0, vy - half_depth - 12.0, -np.inf]), np.array([vx + 115.0, np.inf, np.inf])
        )
        x, y, z = self._at(selected)
        dx, dy = x - vx, y - vy
        ax = np.abs(dx)
        body = _ellipsoid_field((dx, dy), (half_width, half_depth))
        psoas_r = np.clip(5.0 + (ph.psoas_top_z - z) * 0.13, 4.0, 22.0)
        psoas = _rounded_ellipse(ax - (half_width + 0.9 * psoas_r), dy - 2.0, psoas_r, 0.9 * psoas_r)
        paraspinal = _rounded_ellipse(ax - (0.4 * half_width + 24.0), y - (cy + 22.0), 28.0, 32.0)
        posterior = _rounded_ellipse(dx, y - (cy + 18.0), 20.0, canal + 36.0)
        # The quadratus lumborum runs from the 12th rib down, growing with the psoas.
        size = psoas_r * (1.0 / 22.0)
        quadratus = _rounded_ellipse(
            ax - (half_width + 2.0 * psoas_r + 10.0), y - (cy + 6.0), 20.0 * size, 13.0
        )
        block = body
        for part in (psoas, paraspinal, posterior, quadratus):
            block = _smin(block, part, 10.0)
        inner = np.maximum(self.inner[selected], -block)
        self.inner[selected] = inner

        # Bone only where the block is (never inside the cavity), posterior elements in their own small box.
        bone = (inner > 0) & (body < 0)
        phase = np.mod((z - ph.disc_phase_mm) * (1.0 / ph.vertebral_level_mm), 1.0)
        disc_fraction = 8.0 / ph.vertebral_level_mm
        disc = phase < disc_fraction
        self._paint(selected[bone & disc], _DISC_HU)
        self._paint(selected[bone & ~disc & (body >= -_CORTEX_MM)], _CORTEX_HU)
        self._paint(
            selected[bone & ~disc & (body < -_CORTEX_MM)], _CANCELLOUS_HU, self.texture, _TEXTURE_BONE
        )

        near = (ax < half_width + 26.0) & (y > cy - canal - 8.0) & (y < cy + canal + 40.0) & (inner > 0)
        selected, ax, y, phase = selected[near], ax[near], y[near], phase[near]
        canal_r = np.hypot(ax, y - cy)
        arch = np.abs(canal_r - (canal + 3.5)) - 3.5
        spinous = _segment_distance_2d(ax, y, (0.0, cy + canal + 4.0), (0.0, cy + canal + 34.0), 4.5)
        transverse = _segment_distance_2d(ax, y, (0.0, cy), (half_width + 20.0, cy + 4.0), 5.0)
        level = phase > disc_fraction + 0.08
        processes = (phase > 0.4) & (phase < 0.7)
        elements = level & ((arch < 0) | (spinous < 0) | (processes & (transverse < 0)))
        self._paint(selected[elements & (canal_r >= canal)], _POSTERIOR_ELEMENT_HU)
        self._paint(selected[canal_r < canal], _CSF_HU)

    def _ribs(self) -> None:
        """Ribs in the posterolateral wall, each descending from the back towards the flank."""
        ph = self.ph
        wall_mid = self.depth + self.subcutaneous + 0.5 * ph.wall_muscle_mm
        selected = np.flatnonzero(np.abs(wall_mid) < ph.wall_muscle_mm * 0.5 + _RIB_HALF_DEPTH + 2.0)
        x, y, z = self._at(selected)
        scale = _taper(z, ph.body_taper)
        left = x > ph.body_center[0]
        across = np.abs(x - ph.body_center[0]) * (1.0 / ph.body_half_width)
        back = (y - ph.body_center[1]) * (1.0 / ph.body_half_depth_posterior)
        angle = np.arctan2(across, back)  # 0 at the posterior midline, pi/2 at the flank
        start = np.where(left, np.float32(ph.rib_start_z[0]), np.float32(ph.rib_start_z[1]))
        height = z + ph.rib_descent * (angle - _RIB_START_ANGLE) * (2.0 / math.pi) - start
        index = np.rint(height * (1.0 / ph.rib_spacing))
        offset = height - index * ph.rib_spacing
        rib = _ellipsoid_field((wall_mid[selected], offset), (_RIB_HALF_DEPTH, _RIB_HALF_HEIGHT))
        # Lower ribs are short (floating), upper ribs reach further round the flank.
        end_angle = 1.45 + 0.14 * index
        arc = 0.5 * (ph.body_half_width + ph.body_half_depth_posterior) * scale
        rib = np.maximum(rib, (_RIB_START_ANGLE - angle) * arc)
        rib = np.maximum(rib, (angle - end_angle) * arc)
        valid = (index >= 0) & (index < ph.rib_count) & (self.inner[selected] > 0) & (rib < 0)
        self._paint(selected[valid & (rib >= -_CORTEX_MM)], _CORTEX_HU)
        self._paint(selected[valid & (rib < -_CORTEX_MM)], _RIB_MARROW_HU, self.texture, _TEXTURE_BONE)

    def _diaphragm(self) -> None:
        ph = self.ph
        self._paint(np.flatnonzero(self.inner < 0), ph.hu_fat, self.texture_wall, _TEXTURE_FAT)
        above = _diaphragm_distance(ph, self.x, self.y, self.z)
        half = 0.5 * ph.diaphragm_mm
        self.cavity = np.maximum(self.inner, above + half)
        self.thorax = np.maximum(self.inner, half - above)
        muscle = np.flatnonzero((self.inner < 0) & (np.abs(above) <= half))
        self._paint(muscle, ph.hu_muscle, self.texture_wall, _TEXTURE_MUSCLE)

    # -- structures

    def _structures(self) -> None:
        """Structure fields in priority order: each is clipped against the ones before it."""
        ph = self.ph
        selected = self._box(*_spleen_bounds(ph))
        raw = _spleen_raw(ph, *self._at(selected))
        # The spleen keeps its fat plane clear of the diaphragm and the body wall too.
        self.parts["SPLEEN"] = (
            selected,
            _round_max(raw, self.cavity[selected] + ph.spleen_fat_mm + 1.0, 5.0),
        )

        # The aorta drifts a little within the scan range and runs straight beyond it.
        ax, ay, ar, adx, ady = ph.aorta
        z_low, z_high = ph.z_range
        reach = max(abs(adx), abs(ady)) * max(abs(z_low), abs(z_high)) + ar + _MARGIN

        def aorta(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
            z = np.clip(z, z_low, z_high)
            return np.hypot(x - (ax + adx * z), y - (ay + ady * z)) - ar

        self._structure(
            "AORTA",
            (np.array([ax - reach, ay - reach, -np.inf]), np.array([ax + reach, ay + reach, np.inf])),
            aorta,
            self.inner,
            ("SPLEEN",),
        )
        ix, iy, irx, iry, itop = ph.ivc
        pad = np.array([irx + _MARGIN, iry + _MARGIN, 0.0])
        self._structure(
            "IVC",
            (np.array([ix, iy, -np.inf]) - pad, np.array([ix, iy, itop + _MARGIN]) + pad),
            lambda x, y, z: np.maximum(_ellipsoid_field((x - ix, y - iy), (irx, iry)), z - itop),
            self.inner,
            ("SPLEEN", "AORTA"),
        )
        vessels = ("SPLEEN", "AORTA", "IVC")
        self._structure(
            "HEART",
            ph.heart.bounds(_MARGIN),
            ph.heart.field,
            self.thorax,
            vessels[1:],
            gaps={"IVC": 0.0},
        )
        for name, kidney in zip(("KIDNEY_L", "KIDNEY_R"), ph.kidneys, strict=True):
            # Other organs keep clear of the whole kidney, renal sinus included.
            self._structure(name + "_CAPSULE", kidney.bounds(_MARGIN), kidney.field, self.cavity, vessels)
            selected, capsule = self.parts[name + "_CAPSULE"]
            sinus = _kidney_sinus(kidney).field(*self._at(selected))
            self.parts[name] = (selected, np.maximum(capsule, -sinus))
        organs = (*vessels, "KIDNEY_L_CAPSULE", "KIDNEY_R_CAPSULE")
        self._structure("PANCREAS", ph.pancreas.bounds(_MARGIN), ph.pancreas.field, self.cavity, organs)
        organs = (*organs, "PANCREAS")
        self._structure("STOMACH", ph.stomach.bounds(_MARGIN), ph.stomach.field, self.cavity, organs)
        self._structure(
            "LIVER",
            self._liver_bounds(),
            self._liver_raw,
            self.cavity,
            (*organs, "STOMACH"),
            gaps={"IVC": 0.0},
        )

        # Lungs fill the thorax beside the mediastinum; they only need evaluating near it.
        selected = np.flatnonzero(self.thorax < _MARGIN)
        thorax = self.thorax[selected]
        x = self.x[selected] - ph.body_center[0]
        for name, side in (("LUNG_L", 1.0), ("LUNG_R", -1.0)):
            lung = np.maximum(thorax, _MEDIASTINUM_HALF_WIDTH - side * x)
            for other, gap in (("HEART", 3.0), ("AORTA", 2.0), ("IVC", 2.0)):
                np.maximum(lung, gap - self._field_at(other, selected), out=lung)
            self.parts[name] = (selected, lung)

    def _liver_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Box of the liver: within the body, left of its edge, between its inferior surface and the domes."""
        ph = self.ph
        width, depth = ph.body_extent
        x_tip, z_tip, slope_x, slope_y = ph.liver_inferior
        # The inferior surface is lowest at the right flank and at the back.
        lowest = z_tip - slope_x * max(x_tip + width, 0.0) - slope_y * (depth - ph.body_center[1])
        x_edge = max(ph.liver_left_edge[0], ph.liver_left_edge[2])
        lo = np.array([-width, -depth, lowest - _MARGIN])
        hi = np.array([x_edge + 40.0, depth, max(d[2] for d in ph.domes) + _MARGIN])
        return lo, hi

    def _liver_raw(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Right upper quadrant below the dome, right of an oblique edge, above a sloping inferior surface."""
        ph = self.ph
        xa, ya, xp, yp = ph.liver_left_edge
        normal = np.array([yp - ya, -(xp - xa)])
        normal /= np.linalg.norm(normal)
        if normal[0] < 0:
            normal = -normal
        edge = (x - xa) * normal[0] + (y - ya) * normal[1]
        x_tip, z_tip, slope_x, slope_y = ph.liver_inferior
        floor = z_tip + slope_x * (x - x_tip) - slope_y * (y - ph.body_center[1])
        inferior = (floor - z) * (1.0 / math.sqrt(1.0 + slope_x**2 + slope_y**2))
        return _smax(edge, inferior, 25.0)

    # -- painting

    def _paint_thorax(self) -> None:
        ph = self.ph
        self._paint(self._inside("HEART"), _HEART_HU, self.texture, _TEXTURE_ORGAN)
        for name in ("LUNG_L", "LUNG_R"):
            lung = self._inside(name)
            self._paint(lung, ph.hu_lung, self.texture, _TEXTURE_LUNG)
            x, y, z = self._at(lung)
            for vx, vy, vz, dx, dy, dz, radius in ph.lung_vessels:
                px, py, pz = x - vx, y - vy, z - vz
                along = px * dx + py * dy + pz * dz
                px -= along * dx
                py -= along * dy
                pz -= along * dz
                self._paint(lung[px * px + py * py + pz * pz < radius * radius], _LUNG_VESSEL_HU)

    def _paint_abdomen(self) -> None:
        ph = self.ph
        for loop, gas_level in zip(ph.bowel_loops, ph.bowel_gas_levels, strict=True):
            selected = self._box(*loop.bounds(_MARGIN))
            x, y, z = self._at(selected)
            field = np.maximum(loop.field(x, y, z), self.cavity[selected])
            lumen = field < -3.0
            self._paint(selected[(field < 0) & ~lumen], _BOWEL_WALL_HU)
            self._paint(selected[lumen & (y < gas_level)], _GAS_HU)
            self._paint(selected[lumen & (y >= gas_level)], _GI_FLUID_HU, self.texture, _TEXTURE_ORGAN)

        for name, hu, amp in (
            ("AORTA", ph.hu_blood, 1.0),
            ("IVC", ph.hu_blood, 1.0),
            ("KIDNEY_L", ph.hu_kidney, _TEXTURE_ORGAN),
            ("KIDNEY_R", ph.hu_kidney, _TEXTURE_ORGAN),
            ("PANCREAS", ph.hu_pancreas, _TEXTURE_LIVER),
            ("LIVER", ph.hu_liver, _TEXTURE_LIVER),
        ):
            self._paint(self._inside(name), hu, self.texture, amp)

        selected, field = self.parts["STOMACH"]
        wall = (field < 0) & (field >= -ph.stomach_wall_mm)
        self._paint(selected[wall], _STOMACH_WALL_HU, self.texture, _TEXTURE_ORGAN)
        lumen = field < -ph.stomach_wall_mm
        gas = self.y[selected] < ph.stomach_gas_level
        self._paint(selected[lumen & gas], _GAS_HU)
        self._paint(selected[lumen & ~gas], _GI_FLUID_HU, self.texture, _TEXTURE_ORGAN)

        selected, field = self.parts["SPLEEN"]
        self._paint(
            selected[(field >= 0) & (field < ph.spleen_fat_mm)], ph.hu_fat, self.texture_wall, _TEXTURE_FAT
        )
        self._paint(selected[field < 0], ph.hu_spleen, self.texture, _TEXTURE_ORGAN)


# --------------------------------------------------------------------------------------------- sampling


def _vec(v) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    k = _unit(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _frame(rows: np.ndarray) -> tuple[Vec3, Vec3, Vec3]:
    return (_vec(rows[0]), _vec(rows[1]), _vec(rows[2]))


def sample_phantom(rng: np.random.Generator) -> AbdomenPhantom:
    """Draw one patient's anatomy.

    Args:
        rng: the only source of randomness; the same state gives the same phantom.

    Returns:
        The phantom.
    """
    u = rng.uniform
    x0, y0 = u(-6.0, 6.0), u(-6.0, 6.0)
    half_width = u(140.0, 175.0)
    depth_anterior = u(100.0, 128.0)
    depth_posterior = min(depth_anterior * u(0.95, 1.08), 132.0)
    flattening = u(0.88, 0.95)
    taper = (u(-0.03, 0.03), u(-0.04, 0.02))
    # Larger patients carry more subcutaneous fat.
    fat = float(np.clip(10.0 + 0.35 * (half_width - 140.0) + u(-2.0, 4.0), 8.0, 24.0))
    wall = u(9.0, 14.0)
    wall_lateral = fat + wall  # mean distance from skin to the cavity

    # Spine, from the back inwards: skin, thinner posterior fat, spinous process, canal, vertebral body.
    half_w_vb, half_d_vb, canal = u(22.0, 28.0), u(17.0, 22.0), u(8.0, 10.0)
    back = y0 + flattening * depth_posterior
    vy = back - 0.7 * fat - (half_d_vb + 2.0 * canal + 40.0) - u(0.0, 10.0)
    vx = x0 + u(-3.0, 3.0)
    level = u(30.0, 35.0)

    # The spleen hangs under the left dome: the dome's height follows from the spleen's upper pole. The
    # right dome is higher; both sit slightly anterior.
    inner_width = half_width - wall_lateral
    inner_depth = depth_posterior - 0.7 * fat - wall
    spleen, bend, lobulation = _sample_spleen(rng, x0, y0, inner_width, inner_depth)
    dome_y = y0 + u(-25.0, -5.0)
    dome_left_x, dome_right_x = x0 + u(50.0, 70.0), x0 - u(50.0, 70.0)
    dome_radius, dome_depth = u(95.0, 112.0), u(80.0, 105.0)
    pole = np.asarray(spleen.center) + np.asarray(spleen.frame[0]) * spleen.half_axes[0]
    drop = -float(_dome_height((dome_left_x, dome_y, 0.0), dome_radius, dome_depth, pole[0], pole[1])[0])
    top_left = float(pole[2]) + drop + u(4.0, 16.0)
    highest = u(85.0, 105.0)
    if top_left > highest:
        # A tall spleen under a deep recess would lift the dome too far: lower the spleen a little and let
        # the diaphragm trim its upper pole.
        spleen = _shift_z(spleen, -min(top_left - highest, 20.0))
        top_left = highest
    top_right = top_left + u(5.0, 20.0)
    domes = ((dome_left_x, dome_y, top_left), (dome_right_x, dome_y, top_right))

    # The left kidney's upper pole lies medial to the spleen's lower half; the right kidney is lower.
    left_z = min(u(-65.0, -45.0), spleen.center[2] - u(45.0, 60.0))
    kidneys = (
        _sample_kidney(rng, 1.0, x0, vy, left_z),
        _sample_kidney(rng, -1.0, x0, vy, left_z - u(5.0, 20.0)),
    )
    lower_poles = [k.center[2] - abs(k.frame[0][2]) * k.half_axes[0] for k in kidneys]
    z_min = min(lower_poles) - u(8.0, 18.0)
    z_max = top_right + u(12.0, 25.0)
    length = z_max - z_min
    if length < 200.0:
        z_min -= 200.0 - length
    elif length > 260.0:
        # A protocol covers at most 260 mm: keep a little lung base, then give up the lowest slices.
        z_max -= min(0.5 * (length - 260.0), z_max - top_right - 8.0)
        z_min = z_max - 260.0

    aorta_r = u(9.0, 13.0)
    aorta = (
        vx + u(8.0, 18.0),
        vy - half_d_vb - aorta_r - u(2.0, 5.0),
        aorta_r,
        u(-0.03, 0.03),
        u(-0.03, 0.03),
    )
    ivc_rx, ivc_ry = u(11.0, 15.0), u(7.0, 10.0)
    ivc_x, ivc_y = vx - u(20.0, 28.0), vy - half_d_vb - ivc_ry - u(0.0, 4.0)
    ivc = (ivc_x, ivc_y, ivc_rx, ivc_ry, top_right - u(10.0, 25.0))

    spleen_z = spleen.center[2]
    hilum = np.asarray(spleen.center) - np.asarray(spleen.frame[2]) * (spleen.half_axes[2] + 12.0)
    pancreas_z = spleen_z - u(15.0, 30.0)
    pancreas = _Tube(
        points=(
            (ivc_x + u(-5.0, 5.0), ivc_y - ivc_ry - u(18.0, 25.0), pancreas_z - u(15.0, 25.0)),
            (vx + u(-5.0, 5.0), aorta[1] - aorta_r - u(16.0, 22.0), pancreas_z - u(5.0, 10.0)),
            (vx + u(30.0, 45.0), aorta[1] - u(8.0, 18.0), pancreas_z),
            (float(hilum[0]), float(hilum[1]), spleen_z - u(0.0, 12.0)),
        ),
        radii=(u(14.0, 18.0), u(9.0, 12.0), u(9.0, 12.0), u(7.0, 10.0)),
    )

    fundus = (x0 + u(50.0, 70.0), y0 + u(-15.0, 5.0), top_left - u(30.0, 45.0))
    corpus = (x0 + u(40.0, 60.0), y0 - u(35.0, 55.0), fundus[2] - u(35.0, 55.0))
    antrum = (x0 + u(-5.0, 15.0), y0 - u(55.0, 70.0), corpus[2] - u(10.0, 25.0))
    pylorus = (x0 - u(20.0, 35.0), y0 - u(40.0, 55.0), antrum[2] + u(-5.0, 5.0))
    stomach = _Tube(
        points=(fundus, corpus, antrum, pylorus),
        radii=(u(28.0, 38.0), u(25.0, 35.0), u(15.0, 22.0), u(9.0, 12.0)),
    )
    front = min(p[1] - r for p, r in zip(stomach.points, stomach.radii, strict=True))

    x_tip = x0 - inner_width + 10.0
    # The right lobe is 14-18 cm tall and reaches at least the middle of the right kidney.
    z_tip = min(top_right - u(140.0, 180.0), kidneys[1].center[2])
    liver_inferior = (x_tip, z_tip, u(0.35, 0.6), u(0.0, 0.3))
    liver_left_edge = (x0 + u(35.0, 70.0), y0 - depth_anterior, vx + u(-12.0, 5.0), vy)

    loops, gas_levels = _sample_bowel(rng, x0, y0, inner_width, z_min, z_tip, spleen)

    heart_center = (x0 + u(10.0, 30.0), y0 - u(62.0, 75.0), 0.5 * (top_left + top_right) + u(10.0, 30.0))
    heart = _Ellipsoid(
        center=heart_center,
        half_axes=(u(55.0, 70.0), u(35.0, 45.0), u(40.0, 55.0)),
        frame=_frame(_rotation((0.0, 0.0, 1.0), u(-0.5, -0.2))),
    )
    vessels = []
    for side in (1.0, -1.0):
        hilum_point = np.array([x0 + side * 55.0, y0 + 20.0, z_max + 80.0])
        for _ in range(int(rng.integers(4, 7))):
            target = np.array([x0 + side * u(35.0, 110.0), y0 + u(-40.0, 90.0), z_max - u(30.0, 80.0)])
            direction = _unit(target - hilum_point)
            vessels.append((*_vec(hilum_point), *_vec(direction), u(1.5, 3.5)))

    waves = []
    for _ in range(6):
        direction = _unit(rng.normal(size=3))
        k = 2.0 * math.pi / u(35.0, 90.0)
        waves.append((*_vec(direction * k), u(0.0, 2.0 * math.pi)))

    rib_spacing, rib_descent = u(26.0, 32.0), u(35.0, 55.0)
    hu_spleen = u(43.0, 47.0)
    rib_start = kidneys[0].center[2] + u(0.0, 20.0)
    rib_count = math.ceil((z_max + rib_descent - rib_start) / rib_spacing) + 1

    return AbdomenPhantom(
        body_center=(x0, y0),
        body_half_width=half_width,
        body_half_depth_anterior=depth_anterior,
        body_half_depth_posterior=depth_posterior,
        back_flattening=flattening,
        body_taper=taper,
        subcutaneous_fat_mm=fat,
        wall_muscle_mm=wall,
        z_min=z_min,
        z_max=z_max,
        vertebral_body=(vx, vy, half_w_vb, half_d_vb),
        spinal_canal_radius=canal,
        vertebral_level_mm=level,
        disc_phase_mm=u(0.0, level),
        psoas_top_z=kidneys[0].center[2] + u(10.0, 40.0),
        domes=domes,
        dome_radius=dome_radius,
        dome_depth=dome_depth,
        diaphragm_mm=u(4.0, 6.0),
        rib_start_z=(rib_start, rib_start - u(0.0, 10.0)),
        rib_spacing=rib_spacing,
        rib_descent=rib_descent,
        rib_count=rib_count,
        heart=heart,
        lung_vessels=tuple(vessels),
        spleen=spleen,
        spleen_bend=bend,
        spleen_lobulation=lobulation,
        spleen_fat_mm=u(2.5, 4.0),
        liver_left_edge=liver_left_edge,
        liver_inferior=liver_inferior,
        kidneys=kidneys,
        aorta=aorta,
        ivc=ivc,
        pancreas=pancreas,
        stomach=stomach,
        stomach_wall_mm=u(3.0, 5.0),
        stomach_gas_level=max(front, y0 - depth_anterior + 1.3 * fat + wall) + u(10.0, 25.0),
        bowel_loops=loops,
        bowel_gas_levels=gas_levels,
        hu_fat=u(-108.0, -95.0),
        hu_muscle=hu_spleen + u(0.0, 5.0),
        hu_liver=u(55.0, 62.0),
        hu_spleen=hu_spleen,
        hu_kidney=u(29.0, 35.0),
        hu_blood=hu_spleen - u(0.0, 6.0),
        hu_pancreas=u(36.0, 44.0),
        hu_lung=u(-840.0, -800.0),
        texture_waves=tuple(waves),
    )


def _shift_z(e: _Ellipsoid, dz: float) -> _Ellipsoid:
    return _Ellipsoid(
        center=(e.center[0], e.center[1], e.center[2] + dz), half_axes=e.half_axes, frame=e.frame
    )


def _sample_kidney(rng: np.random.Generator, side: float, x0: float, vy: float, z: float) -> _Ellipsoid:
    """A kidney beside the spine: upper pole medial and posterior, hilum facing anteromedially."""
    u = rng.uniform
    center = (x0 + side * u(68.0, 82.0), vy + u(8.0, 22.0), z)
    medial, posterior = math.radians(u(10.0, 20.0)), math.radians(u(5.0, 20.0))
    long_axis = _unit((-side * math.sin(medial), math.sin(posterior), math.cos(medial) * math.cos(posterior)))
    hilum = np.array([-side, -u(0.5, 1.0), 0.0])
    hilum = _unit(hilum - (hilum @ long_axis) * long_axis)
    third = np.cross(long_axis, hilum)
    return _Ellipsoid(
        center=_vec(center),
        half_axes=(u(48.0, 58.0), u(26.0, 32.0), u(20.0, 25.0)),
        frame=_frame(np.stack([long_axis, hilum, third])),
    )


def _sample_spleen(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    inner_width: float,
    inner_depth: float,
) -> tuple[_Ellipsoid, tuple[float, float], tuple[float, ...]]:
    """Spleen against the left posterolateral wall, long axis along the ribs, hilum near z = 0.

    Size, proportions, crescent, lobulation, orientation and position are random.
    """
    u = rng.uniform
    volume = float(np.clip(rng.lognormal(math.log(230.0), 0.3), 130.0, 350.0)) * 1000.0  # mm^3
    width_ratio, thickness_ratio = u(0.52, 0.7), u(0.32, 0.42)
    a = (3.0 * volume / (4.0 * math.pi * width_ratio * thickness_ratio)) ** (1.0 / 3.0)
    axes = (a, a * width_ratio, a * thickness_ratio)

    # Where the cavity wall faces posterolaterally; the spleen's convex side faces the wall.
    angle = math.radians(u(25.0, 45.0))
    wall = np.array([x0 + inner_width * math.cos(angle), y0 + inner_depth * math.sin(angle), 0.0])
    outward = _unit((math.cos(angle) / inner_width, math.sin(angle) / inner_depth, 0.0))
    forward = np.array([outward[1], -outward[0], 0.0])  # along the wall, anterolateral
    tilt = math.radians(u(30.0, 55.0))
    long_axis = math.cos(tilt) * np.array([0.0, 0.0, 1.0]) - math.sin(tilt) * forward  # upper pole posterior
    width_axis = np.cross(outward, long_axis)
    frame = np.stack([long_axis, width_axis, outward])
    jitter = _rotation(rng.normal(size=3), math.radians(u(0.0, 15.0)))
    frame = frame @ jitter.T

    center = wall - outward * (axes[2] + u(4.0, 14.0)) + forward * u(-15.0, 8.0)
    center[2] = u(-10.0, 12.0)
    bend = (u(0.002, 0.006), u(0.009, 0.018))
    lobulation = rng.normal(0.0, 1.0, size=6)
    lobulation *= 0.3 * axes[2] / max(2.0 * float(np.abs(lobulation).sum()), 1e-9) * u(0.5, 1.0)
    spleen = _Ellipsoid(center=_vec(center), half_axes=_vec(axes), frame=_frame(frame))
    return spleen, bend, tuple(float(c) for c in lobulation)


def _sample_bowel(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    inner_width: float,
    z_min: float,
    z_liver_tip: float,
    spleen: _Ellipsoid,
) -> tuple[tuple[_Tube, ...], tuple[float, ...]]:
    """Colon (ascending, transverse, descending) and a few small-bowel loops in the lower abdomen."""
    u = rng.uniform
    lateral = inner_width - u(20.0, 30.0)
    spleen_low = spleen.center[2] - spleen.half_axes[0] * 0.6
    colon = _Tube(
        points=(
            (x0 - lateral, y0 + u(-5.0, 20.0), z_min - 40.0),
            (x0 - lateral + u(0.0, 10.0), y0 + u(-15.0, 5.0), z_liver_tip + u(5.0, 20.0)),
            (x0 + u(-20.0, 20.0), y0 - u(55.0, 75.0), z_liver_tip - u(0.0, 25.0)),
            (x0 + lateral, y0 + u(-15.0, 5.0), spleen_low - u(10.0, 20.0)),
            (x0 + lateral, y0 + u(0.0, 20.0), z_min - 40.0),
        ),
        radii=tuple(u(15.0, 22.0) for _ in range(5)),
    )
    loops = [colon]
    for _ in range(int(rng.integers(3, 6))):
        start = np.array([x0 + u(-70.0, 70.0), y0 + u(-85.0, -20.0), z_min + u(-10.0, 80.0)])
        points = [start]
        for _ in range(3):
            step = _unit(rng.normal(size=3)) * u(30.0, 45.0)
            points.append(points[-1] + step)
        loops.append(_Tube(points=tuple(_vec(p) for p in points), radii=tuple(u(10.0, 15.0) for _ in points)))
    levels = []
    for loop in loops:
        front = min(p[1] - r for p, r in zip(loop.points, loop.radii, strict=True))
        back = max(p[1] + r for p, r in zip(loop.points, loop.radii, strict=True))
        # Small bowel loops range from fluid- to gas-filled, the colon always holds some gas; gas collects
        # anteriorly in a supine patient.
        fill = u(0.15, 0.6) if loop is colon else u(-0.2, 0.7)
        levels.append(front + fill * (back - front))
    return tuple(loops), tuple(levels)
