"""Geometry for dose simulation and 3D printing: a segmented CT in, a voxel phantom and organ surfaces out.

``dose3d geometry`` turns a CT series and its structures (a physician's RTSTRUCT or ``dose3d segment``'s label
image) into an organ label map with TG-263 names, mass density from a HU calibration (Schneider et al. 2000
by default, or the site's own), a material per voxel with tables in CSV/JSON and in GATE 10's format, one
closed mesh per organ (binary STL, in patient millimetres), a summary of volumes and positions, and pictures.
Plain numpy/scikit-image/pydicom/nibabel with trimesh for meshes: nothing here imports NVFlare.
"""

from dose3d_fl.geometry.build import GeometryConfig, GeometryResult, build_geometry
from dose3d_fl.geometry.calibration import HUDensityCurve, load_calibration_csv, schneider_2000
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.gate_format import GateMaterial, read_gate_database, read_hu_ranges, write_gate_files
from dose3d_fl.geometry.inputs import CTInput, Isocentre, load_ct, read_isocentres
from dose3d_fl.geometry.materials import (
    Material,
    MaterialTable,
    build_material_table,
    read_materials_csv,
    read_materials_json,
    schneider_compositions,
    write_material_tables,
)
from dose3d_fl.geometry.meshes import (
    MeshConfig,
    MeshError,
    organ_mesh,
    read_mesh,
    surface_distances,
    write_mesh,
)
from dose3d_fl.geometry.nomenclature import StructureName, tg263_name
from dose3d_fl.geometry.phantom import LabelEntry, VoxelPhantom, build_phantom, write_phantom
from dose3d_fl.geometry.pictures import DrawnMesh, save_material_slices, save_mesh_view
from dose3d_fl.geometry.structures import Organ, organs_from_labels, organs_from_rtstruct, parse_label_names
from dose3d_fl.geometry.summary import OrganSummary, summarise_organ, write_summary

__all__ = [
    "CTInput",
    "DrawnMesh",
    "GateMaterial",
    "GeometryConfig",
    "GeometryInputError",
    "GeometryResult",
    "HUDensityCurve",
    "Isocentre",
    "LabelEntry",
    "Material",
    "MaterialTable",
    "MeshConfig",
    "MeshError",
    "Organ",
    "OrganSummary",
    "StructureName",
    "VoxelPhantom",
    "build_geometry",
    "build_material_table",
    "build_phantom",
    "load_calibration_csv",
    "load_ct",
    "organ_mesh",
    "organs_from_labels",
    "organs_from_rtstruct",
    "parse_label_names",
    "read_gate_database",
    "read_hu_ranges",
    "read_isocentres",
    "read_materials_csv",
    "read_materials_json",
    "read_mesh",
    "save_material_slices",
    "save_mesh_view",
    "schneider_2000",
    "schneider_compositions",
    "summarise_organ",
    "surface_distances",
    "tg263_name",
    "write_gate_files",
    "write_material_tables",
    "write_mesh",
    "write_phantom",
    "write_summary",
]
