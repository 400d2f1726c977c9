"""Shape primitives and signed-distance helpers for the phantom (millimetres, negative inside).

Ellipsoids and tubes (polylines with radii), the smooth and rounded minimum/maximum that join fields,
distances to ellipses and segments, and the small vector helpers that build orthonormal frames.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]

# Structures are evaluated only inside a box reaching this far (mm) beyond them; elsewhere their field is
# this margin, a lower bound, which keeps the sign and the values near the boundary exact.
MARGIN = 8.0


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid: centre, half-axes along the rows of ``frame`` (orthonormal unit vectors), in mm."""

    center: Vec3
    half_axes: Vec3
    frame: tuple[Vec3, Vec3, Vec3]

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        return tuple(e[0] * dx + e[1] * dy + e[2] * dz for e in self.frame)

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return ellipsoid_field(self.local(x, y, z), self.half_axes)

    def bounds(self, pad: float) -> tuple[np.ndarray, np.ndarray]:
        scaled = np.asarray(self.frame) * np.asarray(self.half_axes)[:, None]
        half = np.sqrt((scaled**2).sum(axis=0)) + pad
        return np.asarray(self.center) - half, np.asarray(self.center) + half


@dataclass(frozen=True)
class Tube:
    """A tube along a polyline whose radius varies linearly along each segment (mm)."""

    points: tuple[Vec3, ...]
    radii: tuple[float, ...]

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, blend: float = 6.0) -> np.ndarray:
        """Blended union of the segments; each is evaluated only near itself, elsewhere a lower bound."""
        pad = MARGIN + 2.0 * blend
        result = np.full_like(x, pad)
        for (p0, p1), (r0, r1) in zip(_pairs(self.points), _pairs(self.radii), strict=True):
            lo = np.minimum(p0, p1) - max(r0, r1) - pad
            hi = np.maximum(p0, p1) + max(r0, r1) + pad
            near = np.flatnonzero(
                (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
            )
            cone = segment_distance(x[near], y[near], z[near], p0, p1, r0, r1)
            result[near] = smin(result[near], cone, blend)
        return result

    def bounds(self, pad: float) -> tuple[np.ndarray, np.ndarray]:
        points, radii = np.asarray(self.points), np.asarray(self.radii)[:, None]
        return (points - radii).min(axis=0) - pad, (points + radii).max(axis=0) + pad


def _pairs(items: tuple) -> list[tuple]:
    return list(itertools.pairwise(items))


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum: ``max(a, b)`` where ``|a - b| >= k``, rounded (by at most k/4) where they meet."""
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.maximum(a, b) + h * h * (0.25 / k)


def round_max(a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Intersection with a circular fillet of radius r: still a distance where the surfaces meet at an angle."""
    ua = np.maximum(a + r, 0.0)
    ub = np.maximum(b + r, 0.0)
    return np.minimum(np.maximum(a, b), -r) + np.sqrt(ua * ua + ub * ub)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.minimum(a, b) - h * h * (0.25 / k)


def ellipsoid_field(coords: tuple[np.ndarray, ...], half_axes: tuple) -> np.ndarray:
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


def rounded_ellipse(x: np.ndarray, y: np.ndarray, a: float | np.ndarray, b: float) -> np.ndarray:
    """Cheap distance-like field of a near-circular ellipse: the scaled radial coordinate (for muscles)."""
    return (np.sqrt((x * x) * (1.0 / (a * a)) + (y * y) * (1.0 / (b * b))) - 1.0) * np.sqrt(a * b)


def segment_distance(
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


def segment_distance_2d(
    x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float
) -> np.ndarray:
    d = np.subtract(p1, p0)
    dx, dy = x - p0[0], y - p0[1]
    t = np.clip((dx * d[0] + dy * d[1]) * (1.0 / float(d @ d)), 0.0, 1.0)
    return np.hypot(dx - t * d[0], dy - t * d[1]) - radius


def to_vec3(v) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    k = unit(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def to_frame(rows: np.ndarray) -> tuple[Vec3, Vec3, Vec3]:
    return (to_vec3(rows[0]), to_vec3(rows[1]), to_vec3(rows[2]))
