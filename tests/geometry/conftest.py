"""Fixtures of the geometry tests: one synthetic patient and one built geometry, shared by the module files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dose3d_fl.geometry.build import GeometryConfig, GeometryResult, build_geometry
from tests.geometry.synthetic_patient import SyntheticPatient, write_patient


@pytest.fixture(scope="session")
def patient(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPatient:
    """A 48 x 48 x ~30 synthetic abdomen (8 mm voxels) with BODY, LIVER, SPLEEN and both kidneys."""
    return write_patient(tmp_path_factory.mktemp("patient"))


@pytest.fixture(scope="session")
def built(patient: SyntheticPatient, tmp_path_factory: pytest.TempPathFactory) -> tuple[GeometryResult, Path]:
    """``dose3d geometry`` of the patient, with every mesh format."""
    from dose3d_fl.geometry.meshes import MeshConfig

    out = tmp_path_factory.mktemp("geometry") / "out"
    config = GeometryConfig(
        dicom=patient.ct_dir,
        rtstruct=patient.rtstruct,
        out=out,
        mesh=MeshConfig(formats=("stl", "ply", "obj")),
    )
    return build_geometry(config), out
