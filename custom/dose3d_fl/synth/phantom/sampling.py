"""Drawing a patient: every anatomical parameter of an :class:`AbdomenPhantom` from one random generator.

Body and spine first, then the spleen and the diaphragm domes over it, kidneys, scan range, vessels,
pancreas, stomach, liver, bowel, heart, lung vessels, texture and tissue HU. The draw order is part of the
result: the same generator state gives the same phantom.
"""

from __future__ import annotations

import math

import numpy as np

from dose3d_fl.synth.phantom.anatomy import dome_height
from dose3d_fl.synth.phantom.model import AbdomenPhantom
from dose3d_fl.synth.phantom.shapes import Ellipsoid, Tube, rotation, to_frame, to_vec3, unit


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
    drop = -float(dome_height((dome_left_x, dome_y, 0.0), dome_radius, dome_depth, pole[0], pole[1])[0])
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
    pancreas = Tube(
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
    stomach = Tube(
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
    heart = Ellipsoid(
        center=heart_center,
        half_axes=(u(55.0, 70.0), u(35.0, 45.0), u(40.0, 55.0)),
        frame=to_frame(rotation((0.0, 0.0, 1.0), u(-0.5, -0.2))),
    )
    vessels = []
    for side in (1.0, -1.0):
        hilum_point = np.array([x0 + side * 55.0, y0 + 20.0, z_max + 80.0])
        for _ in range(int(rng.integers(4, 7))):
            target = np.array([x0 + side * u(35.0, 110.0), y0 + u(-40.0, 90.0), z_max - u(30.0, 80.0)])
            direction = unit(target - hilum_point)
            vessels.append((*to_vec3(hilum_point), *to_vec3(direction), u(1.5, 3.5)))

    waves = []
    for _ in range(6):
        direction = unit(rng.normal(size=3))
        k = 2.0 * math.pi / u(35.0, 90.0)
        waves.append((*to_vec3(direction * k), u(0.0, 2.0 * math.pi)))

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


def _shift_z(e: Ellipsoid, dz: float) -> Ellipsoid:
    return Ellipsoid(
        center=(e.center[0], e.center[1], e.center[2] + dz), half_axes=e.half_axes, frame=e.frame
    )


def _sample_kidney(rng: np.random.Generator, side: float, x0: float, vy: float, z: float) -> Ellipsoid:
    """A kidney beside the spine: upper pole medial and posterior, hilum facing anteromedially."""
    u = rng.uniform
    center = (x0 + side * u(68.0, 82.0), vy + u(8.0, 22.0), z)
    medial, posterior = math.radians(u(10.0, 20.0)), math.radians(u(5.0, 20.0))
    long_axis = unit((-side * math.sin(medial), math.sin(posterior), math.cos(medial) * math.cos(posterior)))
    hilum = np.array([-side, -u(0.5, 1.0), 0.0])
    hilum = unit(hilum - (hilum @ long_axis) * long_axis)
    third = np.cross(long_axis, hilum)
    return Ellipsoid(
        center=to_vec3(center),
        half_axes=(u(48.0, 58.0), u(26.0, 32.0), u(20.0, 25.0)),
        frame=to_frame(np.stack([long_axis, hilum, third])),
    )


def _sample_spleen(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    inner_width: float,
    inner_depth: float,
) -> tuple[Ellipsoid, tuple[float, float], tuple[float, ...]]:
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
    outward = unit((math.cos(angle) / inner_width, math.sin(angle) / inner_depth, 0.0))
    forward = np.array([outward[1], -outward[0], 0.0])  # along the wall, anterolateral
    tilt = math.radians(u(30.0, 55.0))
    long_axis = math.cos(tilt) * np.array([0.0, 0.0, 1.0]) - math.sin(tilt) * forward  # upper pole posterior
    width_axis = np.cross(outward, long_axis)
    frame = np.stack([long_axis, width_axis, outward])
    jitter = rotation(rng.normal(size=3), math.radians(u(0.0, 15.0)))
    frame = frame @ jitter.T

    center = wall - outward * (axes[2] + u(4.0, 14.0)) + forward * u(-15.0, 8.0)
    center[2] = u(-10.0, 12.0)
    bend = (u(0.002, 0.006), u(0.009, 0.018))
    lobulation = rng.normal(0.0, 1.0, size=6)
    lobulation *= 0.3 * axes[2] / max(2.0 * float(np.abs(lobulation).sum()), 1e-9) * u(0.5, 1.0)
    spleen = Ellipsoid(center=to_vec3(center), half_axes=to_vec3(axes), frame=to_frame(frame))
    return spleen, bend, tuple(float(c) for c in lobulation)


def _sample_bowel(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    inner_width: float,
    z_min: float,
    z_liver_tip: float,
    spleen: Ellipsoid,
) -> tuple[tuple[Tube, ...], tuple[float, ...]]:
    """Colon (ascending, transverse, descending) and a few small-bowel loops in the lower abdomen."""
    u = rng.uniform
    lateral = inner_width - u(20.0, 30.0)
    spleen_low = spleen.center[2] - spleen.half_axes[0] * 0.6
    colon = Tube(
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
            step = unit(rng.normal(size=3)) * u(30.0, 45.0)
            points.append(points[-1] + step)
        loops.append(
            Tube(points=tuple(to_vec3(p) for p in points), radii=tuple(u(10.0, 15.0) for _ in points))
        )
    levels = []
    for loop in loops:
        front = min(p[1] - r for p, r in zip(loop.points, loop.radii, strict=True))
        back = max(p[1] + r for p, r in zip(loop.points, loop.radii, strict=True))
        # Small bowel loops range from fluid- to gas-filled, the colon always holds some gas; gas collects
        # anteriorly in a supine patient.
        fill = u(0.15, 0.6) if loop is colon else u(-0.2, 0.7)
        levels.append(front + fill * (back - front))
    return tuple(loops), tuple(levels)
