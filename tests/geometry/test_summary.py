"""The geometry summary: volumes, extent, centroid, contour fidelity and isocentre distances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.data.geometry import VolumeGeometry
from dose3d_fl.geometry.inputs import Isocentre
from dose3d_fl.geometry.meshes import organ_mesh
from dose3d_fl.geometry.nomenclature import tg263_name
from dose3d_fl.geometry.structures import Organ
from dose3d_fl.geometry.summary import summarise_organ, write_summary

GEOMETRY = VolumeGeometry(
    (30, 30, 30), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (2.0, 2.0, 2.0), (-29.0, -29.0, -29.0)
)


def test_sphere_summary(tmp_path: Path) -> None:
    points = GEOMETRY.voxel_points()
    mask = np.linalg.norm(points - np.array([4.0, 0.0, 0.0]), axis=-1) <= 15.0
    contour = np.array(
        [[4.0 + 15.0 * np.cos(a), 15.0 * np.sin(a), 1.0] for a in np.linspace(0, 2 * np.pi, 40)]
    )
    organ = Organ(tg263_name("SPLEEN"), mask, contours=[contour])
    mesh = organ_mesh(mask, GEOMETRY)
    inside, outside = Isocentre(("B1",), (4.0, 0.0, 0.0)), Isocentre(("B2", "B3"), (4.0, 0.0, 40.0))
    summary = summarise_organ(organ, 1, mesh, GEOMETRY, [inside, outside])
    assert summary.volume_mask_ml == pytest.approx(4 / 3 * np.pi * 15**3 / 1000, rel=0.03)
    assert abs(summary.volume_difference_percent) < 0.1 and summary.watertight
    assert summary.centroid_lps_mm == pytest.approx((4.0, 0.0, 0.0), abs=0.5)
    assert summary.bbox_min_lps_mm == pytest.approx((-11.0, -15.0, -15.0), abs=2.0)
    assert summary.contour_points == 40 and summary.contour_to_mesh_max_mm < 2.0
    first, second = summary.isocentres
    assert first.inside and first.to_centroid_mm < 0.5 and first.to_surface_mm == pytest.approx(15.0, abs=1.5)
    assert not second.inside and second.to_surface_mm == pytest.approx(25.0, abs=1.5)
    json_path, text_path = write_summary([summary], {"format": "dose3d-geometry"}, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["organs"][0]["name"] == "Spleen" and data["units"]["volume"] == "mL"
    text = text_path.read_text()
    assert "Spleen" in text and "isocentre (B2, B3)" in text and "outside" in text
