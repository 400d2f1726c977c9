"""``dose3d geometry``: a segmented CT in, a voxel phantom with materials and printable organ surfaces out.

Every input is checked before anything is written, and everything is written into a hidden folder beside
``--out`` that is renamed to ``--out`` at the end: an interrupted or failed run leaves no half-written
output, and an existing ``--out`` is replaced only with ``overwrite`` (and only once the new one is
complete). Output layout (docs/geometry.md)::

    OUT/phantom/    labels.nii.gz, labels.csv/.json, density.nii.gz, materials.nii.gz, ct_hu.nii.gz, grid.json
    OUT/materials/  materials.csv, materials.json, calibration.csv
    OUT/gate/       materials.db, hu_to_materials.txt, voxel_materials.json
    OUT/meshes/     <TG-263 name>.stl (and .ply / .obj)
    OUT/pictures/   slices.png, meshes.png
    OUT/summary.json, OUT/summary.txt, OUT/README.txt
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from dose3d_fl.files import write_text_atomic
from dose3d_fl.geometry.calibration import load_calibration_csv, schneider_2000, write_calibration_csv
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.gate_format import write_gate_files
from dose3d_fl.geometry.inputs import CTInput, hu_range, load_ct, read_isocentres
from dose3d_fl.geometry.materials import build_material_table, write_material_tables
from dose3d_fl.geometry.meshes import MeshConfig, MeshError, organ_mesh, write_mesh
from dose3d_fl.geometry.phantom import HU_NAME, VoxelPhantom, build_phantom, grid_description, write_phantom
from dose3d_fl.geometry.pictures import DrawnMesh, save_material_slices, save_mesh_view
from dose3d_fl.geometry.structures import Organ, organs_from_labels, organs_from_structure_set, read_rtstruct
from dose3d_fl.geometry.summary import OrganSummary, summarise_organ, write_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeometryConfig:
    """What ``dose3d geometry`` is asked to do.

    Args:
        dicom: folder holding the CT series.
        out: output folder (must not exist unless ``overwrite``).
        rtstruct: RT Structure Set on the CT; or
        labels: a label image on the CT grid (``dose3d segment``'s ``mask.nii.gz``).
        label_names: label value -> structure name, for ``labels``.
        roi_names: RTSTRUCT ROIs to use; default all with contours.
        series_uid: the CT series when the folder holds several.
        calibration: site HU -> density CSV; default Schneider et al. 2000.
        density_tolerance: largest density range (g/cm3) inside one material.
        clip_hu: clip the CT to the calibration's HU range instead of refusing a CT outside it.
        rtplan: RT Plan whose isocentres the summary measures.
        mesh: smoothing, decimation, volume correction and file formats of the meshes.
        pictures: draw the PNGs.
        overwrite: replace an existing ``out``.
    """

    dicom: Path
    out: Path
    rtstruct: Path | None = None
    labels: Path | None = None
    label_names: dict[int, str] = field(default_factory=lambda: {1: "SPLEEN"})
    roi_names: tuple[str, ...] = ()
    series_uid: str | None = None
    calibration: Path | None = None
    density_tolerance: float = 0.05
    clip_hu: bool = False
    rtplan: Path | None = None
    mesh: MeshConfig = field(default_factory=MeshConfig)
    pictures: bool = True
    overwrite: bool = False


@dataclass
class GeometryResult:
    """What was written and measured."""

    out: Path
    series_instance_uid: str
    organs: list[OrganSummary]
    materials: int
    clipped_voxels: int
    seconds: dict[str, float]


def build_geometry(config: GeometryConfig) -> GeometryResult:
    """Check the inputs, build the phantom and meshes, and write them all into ``config.out``.

    Raises:
        GeometryInputError: a bad input, in one line naming it (nothing is written then).
    """
    start = time.perf_counter()
    out = Path(config.out)
    _check_out(config, out)
    curve = load_calibration_csv(config.calibration) if config.calibration else schneider_2000()
    if (config.rtstruct is None) == (config.labels is None):
        raise GeometryInputError(
            "give the structures either as --rtstruct RS.dcm or as --labels LABELS.nii.gz"
        )
    ct, organs = _load_ct_and_organs(config)
    low, high = hu_range(ct)
    hu = ct.volume.hu
    clipped = 0
    if config.clip_hu:
        clipped = int(np.count_nonzero((hu < curve.hu_range[0]) | (hu > curve.hu_range[1])))
        hu = np.clip(hu, *curve.hu_range)
    else:
        curve.check_covers(low, high, f"CT series {ct.series_instance_uid}")
    isocentres = read_isocentres(config.rtplan, ct) if config.rtplan else []
    table = build_material_table(curve, config.density_tolerance)
    seconds = {"load": time.perf_counter() - start}

    start = time.perf_counter()
    geometry = ct.volume.geometry
    phantom = build_phantom(hu, geometry, organs, curve, table)
    meshes = []
    for organ in organs:
        try:
            meshes.append(organ_mesh(organ.mask, geometry, config.mesh))
        except MeshError as err:
            raise GeometryInputError(f"organ {organ.name.name}: {err}") from err
    summaries = [
        summarise_organ(organ, value, mesh, geometry, isocentres)
        for value, (organ, mesh) in enumerate(zip(organs, meshes, strict=True), start=1)
    ]
    seconds["build"] = time.perf_counter() - start

    start = time.perf_counter()
    context = {
        "format": "dose3d-geometry",
        "version": 1,
        "inputs": {
            "ct_folder": str(config.dicom),
            "series_instance_uid": ct.series_instance_uid,
            "frame_of_reference_uid": ct.volume.frame_of_reference_uid,
            "structures": str(config.rtstruct or config.labels),
            "rtplan": str(config.rtplan) if config.rtplan else None,
        },
        "ct_hu_range": [low, high],
        "clipped_voxels": clipped,
        "calibration": {
            "source": curve.source,
            "hu_range": list(curve.hu_range),
            "density_range_g_cm3": list(curve.density_range),
        },
        "materials": {"source": table.source, "count": len(table.materials)},
        "mesh": asdict(config.mesh),
        "grid": grid_description(geometry),
    }
    with _staged_output(out, config.overwrite) as stage:
        write_phantom(phantom, stage / "phantom", {"series_instance_uid": ct.series_instance_uid})
        write_material_tables(table, stage / "materials")
        write_calibration_csv(curve, stage / "materials" / "calibration.csv")
        write_gate_files(table, stage / "gate", f"phantom/{HU_NAME}")
        for organ, mesh in zip(organs, meshes, strict=True):
            write_mesh(mesh, stage / "meshes" / organ.name.file_stem, config.mesh.formats, organ.name.name)
        write_summary(summaries, context, stage)
        if config.pictures:
            _draw(phantom, organs, meshes, stage / "pictures", ct)
        write_text_atomic(stage / "README.txt", _readme(ct, len(organs), len(table.materials)))
    seconds["write"] = time.perf_counter() - start
    return GeometryResult(
        out=out,
        series_instance_uid=ct.series_instance_uid,
        organs=summaries,
        materials=len(table.materials),
        clipped_voxels=clipped,
        seconds=seconds,
    )


def _check_out(config: GeometryConfig, out: Path) -> None:
    if out.exists() and not config.overwrite:
        raise GeometryInputError(
            f"output folder {out} exists; choose another --out or pass --overwrite to replace it"
        )
    if out.exists() and not out.is_dir():
        raise GeometryInputError(f"--out {out} is a file, not a folder")
    resolved = out.resolve()
    for given in (config.dicom, config.rtstruct, config.labels, config.calibration, config.rtplan):
        if given is not None and Path(given).resolve().is_relative_to(resolved):
            raise GeometryInputError(
                f"--out {out} holds the input {given}; choose an output folder outside the inputs"
            )


def _load_ct_and_organs(config: GeometryConfig) -> tuple[CTInput, list[Organ]]:
    if config.rtstruct is not None:
        path = Path(config.rtstruct)
        ds, structure_set = read_rtstruct(path)
        ct = load_ct(config.dicom, config.series_uid, structure_set.referenced_series_uids)
        return ct, organs_from_structure_set(path, ds, structure_set, ct, config.roi_names)
    ct = load_ct(config.dicom, config.series_uid)
    return ct, organs_from_labels(config.labels, ct, config.label_names)


@contextlib.contextmanager
def _staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden folder beside ``out`` that becomes ``out`` when the block succeeds, and is removed otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.exists() and not overwrite:
            raise GeometryInputError(f"output folder {out} appeared while writing; nothing was replaced")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent)) if out.exists() else None
        if old is not None:
            os.replace(out, old / "previous")
        try:
            os.replace(stage, out)
        except OSError:
            if old is not None:
                os.replace(old / "previous", out)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _draw(
    phantom: VoxelPhantom, organs: list[Organ], meshes: list[trimesh.Trimesh], folder: Path, ct: CTInput
) -> None:
    title = f"CT series ...{ct.series_instance_uid[-12:]}"
    save_material_slices(phantom, folder / "slices.png", title=f"materials and organs, {title}")
    drawn = [
        DrawnMesh(organ.name.name, mesh, organ.color, organ.interpreted_type == "EXTERNAL")
        for organ, mesh in zip(organs, meshes, strict=True)
    ]
    save_mesh_view(drawn, folder / "meshes.png", title="organ surfaces (LPS mm)")


def _readme(ct: CTInput, organs: int, materials: int) -> str:
    return f"""dose3d geometry of CT series {ct.series_instance_uid} ({organs} structures, {materials} materials)

Coordinates: DICOM patient coordinates (LPS: +x patient left, +y posterior, +z superior), millimetres.
NIfTI files carry the NIfTI (RAS) affine; phantom/grid.json gives origin, spacing and directions in LPS.

phantom/labels.nii.gz     organ label per voxel (0 = none); names in labels.csv (TG-263)
phantom/density.nii.gz    mass density, g/cm3, from materials/calibration.csv
phantom/materials.nii.gz  material index per voxel; materials/materials.csv lists them
phantom/ct_hu.nii.gz      the HU the phantom was made from
gate/                     the same materials for GATE 10 (opengate): materials.db, hu_to_materials.txt,
                          voxel_materials.json
meshes/                   one closed surface per structure, binary STL in LPS mm
summary.txt/.json         volumes (mask and mesh), bounding boxes, centroids, isocentre distances
pictures/                 material slices with organ outlines; the meshes in 3D

See docs/geometry.md of dose3d-fl.
"""
