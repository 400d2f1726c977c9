"""Anatomical surfaces as fields: body outline, subcutaneous fat, diaphragm domes, spleen, renal sinus.

Functions of a phantom's parameters and patient positions (LPS mm); the scene evaluates them at the points
of one rendering, and sampling uses the dome height to place the diaphragm over the spleen.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from dose3d_fl.synth.phantom.shapes import MARGIN, Ellipsoid, Vec3, ellipsoid_field, smax, to_vec3

if TYPE_CHECKING:
    from dose3d_fl.synth.phantom.model import AbdomenPhantom

_DOME_ANTERIOR_FLATTENING = 0.6


def taper_scale(z: np.ndarray, taper: tuple[float, float]) -> np.ndarray:
    """Scale of the body cross-section along z (the body is a little wider towards chest or pelvis)."""
    t = np.clip(z * 0.01, -1.6, 1.6)
    return 1.0 + t * (taper[0] + t * taper[1])


def body_field(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Skin: an ellipse with separate anterior/posterior depths and a back flattened against the table."""
    scale = taper_scale(z, ph.body_taper)
    dx = x - ph.body_center[0]
    dy = y - ph.body_center[1]
    # Anterior and posterior half-depths differ; the sign picks one without a slow np.where.
    anterior, posterior = ph.body_half_depth_anterior, ph.body_half_depth_posterior
    depth = np.sign(dy)
    depth *= 0.5 * (posterior - anterior)
    depth += 0.5 * (posterior + anterior)
    ellipse = ellipsoid_field((dx, dy), (ph.body_half_width * scale, depth * scale))
    back = dy - (ph.back_flattening * ph.body_half_depth_posterior) * scale
    return smax(ellipse, back, 25.0)


def subcutaneous_fat(ph: AbdomenPhantom, y: np.ndarray) -> np.ndarray:
    """Subcutaneous fat thickness: 30% thicker anteriorly and 30% thinner at the back than the mean."""
    anterior = np.clip((ph.body_center[1] - y) * 0.01, -1.0, 1.0)
    return ph.subcutaneous_fat_mm * (1.0 + 0.3 * anterior)


def dome_height(
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
    left, slope_left = dome_height(domes[0], radius, depth, x, y)
    right, slope_right = dome_height(domes[1], radius, depth, x, y)
    blend = 25.0
    # The slope of the smooth maximum is the weighted slope of the domes, so a field normalised by it stays
    # continuous where the two domes meet.
    weight = np.clip(0.5 + (left - right) * (0.5 / blend), 0.0, 1.0)
    return smax(left, right, blend), slope_right + weight * (slope_left - slope_right)


def diaphragm_distance(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) above the diaphragm mid-surface (positive in the thorax)."""
    height, slope = _diaphragm_height(ph.domes, ph.dome_radius, ph.dome_depth, x, y)
    return (z - height) / np.sqrt(1.0 + slope * slope)


def spleen_raw(ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Bent, lobulated ellipsoid; the bend makes a crescent whose concave side is the hilum."""
    u, v, w = ph.spleen.local(x, y, z)
    bend_u, bend_v = ph.spleen_bend
    w = w + bend_u * u * u + bend_v * v * v
    a, b, c = ph.spleen.half_axes
    field = ellipsoid_field((u, v, w), (a, b, c))
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


def spleen_bounds(ph: AbdomenPhantom) -> tuple[np.ndarray, np.ndarray]:
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
    pad = 4.0 * float(np.abs(ph.spleen_lobulation).sum()) + 1.0 + MARGIN
    return world.min(axis=0) - pad, world.max(axis=0) + pad


def kidney_sinus(kidney: Ellipsoid) -> Ellipsoid:
    """Renal sinus fat: an ellipsoid opening through the hilum (the medial-anterior side)."""
    length, width, depth = kidney.half_axes
    hilum = np.asarray(kidney.frame[1])
    center = np.asarray(kidney.center) + 0.6 * width * hilum
    return Ellipsoid(
        center=to_vec3(center), half_axes=(0.5 * length, 0.45 * width, 0.42 * depth), frame=kidney.frame
    )
