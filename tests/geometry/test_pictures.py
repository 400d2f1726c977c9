"""The pictures are real PNGs of the expected size, drawn without a display."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread

from dose3d_fl.geometry.pictures import DrawnMesh, save_material_slices, save_mesh_view
from tests.geometry.synthetic_patient import small_phantom


def test_material_slices_and_mesh_view(tmp_path: Path) -> None:
    import trimesh

    phantom, _, _ = small_phantom()
    slices = imread(save_material_slices(phantom, tmp_path / "slices.png", title="test"))
    assert slices.shape[:2] == (400, 800) and np.ptp(slices[..., :3]) > 0
    meshes = [
        DrawnMesh("External", trimesh.creation.box((40, 30, 50)), (0, 255, 0), external=True),
        DrawnMesh("Spleen", trimesh.creation.icosphere(radius=8.0), (255, 128, 0)),
    ]
    view = imread(save_mesh_view(meshes, tmp_path / "meshes.png", title="test"))
    assert view.shape[:2] == (460, 460) and np.ptp(view[..., :3]) > 0
