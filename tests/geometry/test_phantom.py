"""The voxel phantom: label priority, density and material maps, and the NIfTI files with their frame."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from dose3d_fl.geometry.calibration import schneider_2000
from dose3d_fl.geometry.phantom import write_phantom
from tests.geometry.synthetic_patient import SMALL_GRID as GEOMETRY
from tests.geometry.synthetic_patient import small_phantom


def test_smaller_structure_keeps_its_voxels_and_every_voxel_has_material_and_density() -> None:
    phantom, body, organ = small_phantom()
    assert (phantom.labels[organ] == 2).all() and (phantom.labels[body & ~organ] == 1).all()
    assert (phantom.labels[~body] == 0).all()
    entries = {e.name: e for e in phantom.label_table}
    assert (
        entries["External"].voxels == body.sum()
        and entries["External"].voxels_in_map == body.sum() - organ.sum()
    )
    assert entries["Spleen"].tg263 and entries["Spleen"].volume_ml == organ.sum() * 24 / 1000
    assert phantom.materials.min() >= 1
    low, high = phantom.curve.density_range
    assert low <= phantom.density.min() and phantom.density.max() <= high
    by_index = phantom.material_table.by_index()
    assert by_index[int(phantom.materials[2, 2, 1])].material_class == "bone"
    assert by_index[int(phantom.materials[0, 0, 0])].material_class == "air"
    assert phantom.density[1, 1, 1] == np.float32(schneider_2000().densities(np.array([40.0]))[0])


def test_files_carry_the_ras_affine_and_grid_json_states_lps(tmp_path: Path) -> None:
    phantom, _, _ = small_phantom()
    write_phantom(phantom, tmp_path, {"series_instance_uid": "1.2.3"})
    for name, dtype in [
        ("labels", np.uint16),
        ("materials", np.uint16),
        ("density", np.float32),
        ("ct_hu", np.int16),
    ]:
        image = nib.load(tmp_path / f"{name}.nii.gz")
        assert np.allclose(image.affine, GEOMETRY.affine_ras)
        assert image.get_data_dtype() == dtype
        assert image.header.get_xyzt_units()[0] == "mm"
    assert np.array_equal(np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj), phantom.labels)
    assert np.allclose(nib.load(tmp_path / "density.nii.gz").get_fdata(), phantom.density)
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid["origin_lps_mm"] == [10.0, -20.0, 30.0] and grid["spacing_mm"] == [2.0, 3.0, 4.0]
    assert grid["frame"].startswith("DICOM patient coordinates, LPS")
    assert np.allclose(grid["affine_ras"], GEOMETRY.affine_ras) and grid["series_instance_uid"] == "1.2.3"
    assert grid["centre_lps_mm"] == [5.0, -14.0, 24.0]
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    assert rows[0].startswith("label,name,source_name,tg263") and rows[2].startswith(
        "2,Spleen,SPLEEN,yes,ORGAN"
    )
