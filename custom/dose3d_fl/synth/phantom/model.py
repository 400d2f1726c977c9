"""The phantom of one patient: its drawn parameters, and evaluation at any points.

:class:`AbdomenPhantom` holds every randomly drawn anatomical parameter (draw one with
:func:`~dose3d_fl.synth.phantom.sampling.sample_phantom`); :meth:`AbdomenPhantom.evaluate` renders HU and
structure fields through :class:`~dose3d_fl.synth.phantom.scene.Scene`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dose3d_fl.synth.phantom.anatomy import taper_scale
from dose3d_fl.synth.phantom.scene import Scene
from dose3d_fl.synth.phantom.shapes import Ellipsoid, Tube, Vec3
from dose3d_fl.synth.phantom.values import STRUCTURE_NAMES, PhantomValues


@dataclass(frozen=True)
class AbdomenPhantom:
    """Every randomly drawn anatomical parameter of one patient (mm, LPS, HU); draw with :func:`sample_phantom`.

    Shapes: ``Ellipsoid`` (centre, half-axes, orthonormal frame) and ``Tube`` (polyline with radii).

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
    heart: Ellipsoid
    lung_vessels: tuple[tuple[float, ...], ...]
    spleen: Ellipsoid
    spleen_bend: tuple[float, float]
    spleen_lobulation: tuple[float, ...]
    spleen_fat_mm: float
    liver_left_edge: tuple[float, float, float, float]
    liver_inferior: tuple[float, float, float, float]
    kidneys: tuple[Ellipsoid, Ellipsoid]
    aorta: tuple[float, float, float, float, float]
    ivc: tuple[float, float, float, float, float]
    pancreas: Tube
    stomach: Tube
    stomach_wall_mm: float
    stomach_gas_level: float
    bowel_loops: tuple[Tube, ...]
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
        scale = taper_scale(np.linspace(self.z_min, self.z_max, 65), self.body_taper).max()
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
        hu, fields = Scene(self, x, y, z).render()
        return PhantomValues(
            hu=hu.reshape(leading), fields={name: fields[name].reshape(leading) for name in STRUCTURE_NAMES}
        )
