"""One evaluation of the phantom: structure fields built outside-in and tissue HU painted from them.

The :class:`Scene` computes the skin, body wall, spine, ribs and diaphragm, then the organ fields in
priority order (each clipped against the ones before it), and paints HU in the same order, so every mask
``field < 0`` matches the painted image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from dose3d_fl.synth.phantom.anatomy import (
    body_field,
    diaphragm_distance,
    kidney_sinus,
    spleen_bounds,
    spleen_raw,
    subcutaneous_fat,
    taper_scale,
)
from dose3d_fl.synth.phantom.shapes import (
    MARGIN,
    ellipsoid_field,
    round_max,
    rounded_ellipse,
    segment_distance_2d,
    smax,
    smin,
)
from dose3d_fl.synth.phantom.values import (
    AIR_HU,
    BOWEL_WALL_HU,
    CANCELLOUS_HU,
    CORTEX_HU,
    CORTEX_MM,
    CSF_HU,
    DISC_HU,
    GAS_HU,
    GI_FLUID_HU,
    HEART_HU,
    LUNG_VESSEL_HU,
    POSTERIOR_ELEMENT_HU,
    RIB_MARROW_HU,
    STOMACH_WALL_HU,
    STRUCTURE_NAMES,
    TEXTURE_BONE,
    TEXTURE_FAT,
    TEXTURE_LIVER,
    TEXTURE_LUNG,
    TEXTURE_MUSCLE,
    TEXTURE_ORGAN,
    wave_texture,
)

if TYPE_CHECKING:
    from dose3d_fl.synth.phantom.model import AbdomenPhantom

# Fat plane (mm) between neighbouring organs other than the spleen, which has its own per-patient plane.
_ORGAN_GAP = 2.0
_MEDIASTINUM_HALF_WIDTH = 14.0
_RIB_START_ANGLE = 0.5  # radians from the posterior midline, lateral to the paraspinal muscles
_RIB_HALF_DEPTH = 4.5
_RIB_HALF_HEIGHT = 6.5


class Scene:
    """One evaluation: fields are built outside-in (skin, wall, cavity, organs) and HU painted in that order.

    Everything below the skin is computed on the points inside the body only, and each structure only on
    the points inside its bounding box. Structure fields are clipped against the structures of higher
    priority (leaving a fat plane), so no two structures overlap and every mask matches the painted HU.
    """

    def __init__(self, ph: AbdomenPhantom, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.ph = ph
        self.body = body_field(ph, x, y, z)
        self.inside = np.flatnonzero(self.body < 0)
        self.x, self.y, self.z = x[self.inside], y[self.inside], z[self.inside]
        self.span = [
            (float(c.min()), float(c.max()), max(float(c.max() - c.min()), 1.0))
            if c.size
            else (0.0, 0.0, 1.0)
            for c in (self.x, self.y, self.z)
        ]
        self.hu = np.empty_like(self.x)
        self.texture = wave_texture(self.x, self.y, self.z, ph.texture_waves[:3])
        self.texture_wall = wave_texture(self.x, self.y, self.z, ph.texture_waves[3:])
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
        hu = np.full(self.body.shape, AIR_HU, dtype=np.float32)
        hu[self.inside] = self.hu
        fields = {"BODY": self.body}
        for name in STRUCTURE_NAMES[1:]:
            selected, values = self.parts[name]
            field = np.full_like(self.body, MARGIN)
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
            full = np.full_like(self.x, MARGIN)
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
        keep = values < MARGIN
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
        self.subcutaneous = subcutaneous_fat(ph, self.y)
        below_fat = self.depth + self.subcutaneous
        self.hu[:] = ph.hu_fat + TEXTURE_FAT * self.texture_wall
        self._paint(np.flatnonzero(below_fat < 0), ph.hu_muscle, self.texture_wall, TEXTURE_MUSCLE)
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
        body = ellipsoid_field((dx, dy), (half_width, half_depth))
        psoas_r = np.clip(5.0 + (ph.psoas_top_z - z) * 0.13, 4.0, 22.0)
        psoas = rounded_ellipse(ax - (half_width + 0.9 * psoas_r), dy - 2.0, psoas_r, 0.9 * psoas_r)
        paraspinal = rounded_ellipse(ax - (0.4 * half_width + 24.0), y - (cy + 22.0), 28.0, 32.0)
        posterior = rounded_ellipse(dx, y - (cy + 18.0), 20.0, canal + 36.0)
        # The quadratus lumborum runs from the 12th rib down, growing with the psoas.
        size = psoas_r * (1.0 / 22.0)
        quadratus = rounded_ellipse(
            ax - (half_width + 2.0 * psoas_r + 10.0), y - (cy + 6.0), 20.0 * size, 13.0
        )
        block = body
        for part in (psoas, paraspinal, posterior, quadratus):
            block = smin(block, part, 10.0)
        inner = np.maximum(self.inner[selected], -block)
        self.inner[selected] = inner

        # Bone only where the block is (never inside the cavity), posterior elements in their own small box.
        bone = (inner > 0) & (body < 0)
        phase = np.mod((z - ph.disc_phase_mm) * (1.0 / ph.vertebral_level_mm), 1.0)
        disc_fraction = 8.0 / ph.vertebral_level_mm
        disc = phase < disc_fraction
        self._paint(selected[bone & disc], DISC_HU)
        self._paint(selected[bone & ~disc & (body >= -CORTEX_MM)], CORTEX_HU)
        self._paint(selected[bone & ~disc & (body < -CORTEX_MM)], CANCELLOUS_HU, self.texture, TEXTURE_BONE)

        near = (ax < half_width + 26.0) & (y > cy - canal - 8.0) & (y < cy + canal + 40.0) & (inner > 0)
        selected, ax, y, phase = selected[near], ax[near], y[near], phase[near]
        canal_r = np.hypot(ax, y - cy)
        arch = np.abs(canal_r - (canal + 3.5)) - 3.5
        spinous = segment_distance_2d(ax, y, (0.0, cy + canal + 4.0), (0.0, cy + canal + 34.0), 4.5)
        transverse = segment_distance_2d(ax, y, (0.0, cy), (half_width + 20.0, cy + 4.0), 5.0)
        level = phase > disc_fraction + 0.08
        processes = (phase > 0.4) & (phase < 0.7)
        elements = level & ((arch < 0) | (spinous < 0) | (processes & (transverse < 0)))
        self._paint(selected[elements & (canal_r >= canal)], POSTERIOR_ELEMENT_HU)
        self._paint(selected[canal_r < canal], CSF_HU)

    def _ribs(self) -> None:
        """Ribs in the posterolateral wall, each descending from the back towards the flank."""
        ph = self.ph
        wall_mid = self.depth + self.subcutaneous + 0.5 * ph.wall_muscle_mm
        selected = np.flatnonzero(np.abs(wall_mid) < ph.wall_muscle_mm * 0.5 + _RIB_HALF_DEPTH + 2.0)
        x, y, z = self._at(selected)
        scale = taper_scale(z, ph.body_taper)
        left = x > ph.body_center[0]
        across = np.abs(x - ph.body_center[0]) * (1.0 / ph.body_half_width)
        back = (y - ph.body_center[1]) * (1.0 / ph.body_half_depth_posterior)
        angle = np.arctan2(across, back)  # 0 at the posterior midline, pi/2 at the flank
        start = np.where(left, np.float32(ph.rib_start_z[0]), np.float32(ph.rib_start_z[1]))
        height = z + ph.rib_descent * (angle - _RIB_START_ANGLE) * (2.0 / math.pi) - start
        index = np.rint(height * (1.0 / ph.rib_spacing))
        offset = height - index * ph.rib_spacing
        rib = ellipsoid_field((wall_mid[selected], offset), (_RIB_HALF_DEPTH, _RIB_HALF_HEIGHT))
        # Lower ribs are short (floating), upper ribs reach further round the flank.
        end_angle = 1.45 + 0.14 * index
        arc = 0.5 * (ph.body_half_width + ph.body_half_depth_posterior) * scale
        rib = np.maximum(rib, (_RIB_START_ANGLE - angle) * arc)
        rib = np.maximum(rib, (angle - end_angle) * arc)
        valid = (index >= 0) & (index < ph.rib_count) & (self.inner[selected] > 0) & (rib < 0)
        self._paint(selected[valid & (rib >= -CORTEX_MM)], CORTEX_HU)
        self._paint(selected[valid & (rib < -CORTEX_MM)], RIB_MARROW_HU, self.texture, TEXTURE_BONE)

    def _diaphragm(self) -> None:
        ph = self.ph
        self._paint(np.flatnonzero(self.inner < 0), ph.hu_fat, self.texture_wall, TEXTURE_FAT)
        above = diaphragm_distance(ph, self.x, self.y, self.z)
        half = 0.5 * ph.diaphragm_mm
        self.cavity = np.maximum(self.inner, above + half)
        self.thorax = np.maximum(self.inner, half - above)
        muscle = np.flatnonzero((self.inner < 0) & (np.abs(above) <= half))
        self._paint(muscle, ph.hu_muscle, self.texture_wall, TEXTURE_MUSCLE)

    # -- structures

    def _structures(self) -> None:
        """Structure fields in priority order: each is clipped against the ones before it."""
        ph = self.ph
        selected = self._box(*spleen_bounds(ph))
        raw = spleen_raw(ph, *self._at(selected))
        # The spleen keeps its fat plane clear of the diaphragm and the body wall too.
        self.parts["SPLEEN"] = (
            selected,
            round_max(raw, self.cavity[selected] + ph.spleen_fat_mm + 1.0, 5.0),
        )

        # The aorta drifts a little within the scan range and runs straight beyond it.
        ax, ay, ar, adx, ady = ph.aorta
        z_low, z_high = ph.z_range
        reach = max(abs(adx), abs(ady)) * max(abs(z_low), abs(z_high)) + ar + MARGIN

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
        pad = np.array([irx + MARGIN, iry + MARGIN, 0.0])
        self._structure(
            "IVC",
            (np.array([ix, iy, -np.inf]) - pad, np.array([ix, iy, itop + MARGIN]) + pad),
            lambda x, y, z: np.maximum(ellipsoid_field((x - ix, y - iy), (irx, iry)), z - itop),
            self.inner,
            ("SPLEEN", "AORTA"),
        )
        vessels = ("SPLEEN", "AORTA", "IVC")
        self._structure(
            "HEART",
            ph.heart.bounds(MARGIN),
            ph.heart.field,
            self.thorax,
            vessels[1:],
            gaps={"IVC": 0.0},
        )
        for name, kidney in zip(("KIDNEY_L", "KIDNEY_R"), ph.kidneys, strict=True):
            # Other organs keep clear of the whole kidney, renal sinus included.
            self._structure(name + "_CAPSULE", kidney.bounds(MARGIN), kidney.field, self.cavity, vessels)
            selected, capsule = self.parts[name + "_CAPSULE"]
            sinus = kidney_sinus(kidney).field(*self._at(selected))
            self.parts[name] = (selected, np.maximum(capsule, -sinus))
        organs = (*vessels, "KIDNEY_L_CAPSULE", "KIDNEY_R_CAPSULE")
        self._structure("PANCREAS", ph.pancreas.bounds(MARGIN), ph.pancreas.field, self.cavity, organs)
        organs = (*organs, "PANCREAS")
        self._structure("STOMACH", ph.stomach.bounds(MARGIN), ph.stomach.field, self.cavity, organs)
        self._structure(
            "LIVER",
            self._liver_bounds(),
            self._liver_raw,
            self.cavity,
            (*organs, "STOMACH"),
            gaps={"IVC": 0.0},
        )

        # Lungs fill the thorax beside the mediastinum; they only need evaluating near it.
        selected = np.flatnonzero(self.thorax < MARGIN)
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
        lo = np.array([-width, -depth, lowest - MARGIN])
        hi = np.array([x_edge + 40.0, depth, max(d[2] for d in ph.domes) + MARGIN])
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
        return smax(edge, inferior, 25.0)

    # -- painting

    def _paint_thorax(self) -> None:
        ph = self.ph
        self._paint(self._inside("HEART"), HEART_HU, self.texture, TEXTURE_ORGAN)
        for name in ("LUNG_L", "LUNG_R"):
            lung = self._inside(name)
            self._paint(lung, ph.hu_lung, self.texture, TEXTURE_LUNG)
            x, y, z = self._at(lung)
            for vx, vy, vz, dx, dy, dz, radius in ph.lung_vessels:
                px, py, pz = x - vx, y - vy, z - vz
                along = px * dx + py * dy + pz * dz
                px -= along * dx
                py -= along * dy
                pz -= along * dz
                self._paint(lung[px * px + py * py + pz * pz < radius * radius], LUNG_VESSEL_HU)

    def _paint_abdomen(self) -> None:
        ph = self.ph
        for loop, gas_level in zip(ph.bowel_loops, ph.bowel_gas_levels, strict=True):
            selected = self._box(*loop.bounds(MARGIN))
            x, y, z = self._at(selected)
            field = np.maximum(loop.field(x, y, z), self.cavity[selected])
            lumen = field < -3.0
            self._paint(selected[(field < 0) & ~lumen], BOWEL_WALL_HU)
            self._paint(selected[lumen & (y < gas_level)], GAS_HU)
            self._paint(selected[lumen & (y >= gas_level)], GI_FLUID_HU, self.texture, TEXTURE_ORGAN)

        for name, hu, amp in (
            ("AORTA", ph.hu_blood, 1.0),
            ("IVC", ph.hu_blood, 1.0),
            ("KIDNEY_L", ph.hu_kidney, TEXTURE_ORGAN),
            ("KIDNEY_R", ph.hu_kidney, TEXTURE_ORGAN),
            ("PANCREAS", ph.hu_pancreas, TEXTURE_LIVER),
            ("LIVER", ph.hu_liver, TEXTURE_LIVER),
        ):
            self._paint(self._inside(name), hu, self.texture, amp)

        selected, field = self.parts["STOMACH"]
        wall = (field < 0) & (field >= -ph.stomach_wall_mm)
        self._paint(selected[wall], STOMACH_WALL_HU, self.texture, TEXTURE_ORGAN)
        lumen = field < -ph.stomach_wall_mm
        gas = self.y[selected] < ph.stomach_gas_level
        self._paint(selected[lumen & gas], GAS_HU)
        self._paint(selected[lumen & ~gas], GI_FLUID_HU, self.texture, TEXTURE_ORGAN)

        selected, field = self.parts["SPLEEN"]
        self._paint(
            selected[(field >= 0) & (field < ph.spleen_fat_mm)], ph.hu_fat, self.texture_wall, TEXTURE_FAT
        )
        self._paint(selected[field < 0], ph.hu_spleen, self.texture, TEXTURE_ORGAN)
