"""The geometry command of ``dose3d``: ``geometry`` (a segmented CT to a voxel phantom and organ meshes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail


def _cmd_geometry(args: argparse.Namespace) -> int:
    from dose3d_fl.geometry.build import GeometryConfig, build_geometry
    from dose3d_fl.geometry.errors import GeometryInputError
    from dose3d_fl.geometry.meshes import MeshConfig
    from dose3d_fl.geometry.structures import parse_label_names

    try:
        mesh = MeshConfig(
            smoothing_iterations=args.smoothing,
            decimation=args.decimation,
            formats=tuple(f.strip().lower() for f in args.mesh_formats.split(",") if f.strip()),
        )
        config = GeometryConfig(
            dicom=args.dicom,
            out=args.out,
            rtstruct=args.rtstruct,
            labels=args.labels,
            label_names=parse_label_names(args.label_names),
            roi_names=tuple(args.roi or ()),
            series_uid=args.series,
            calibration=args.calibration,
            density_tolerance=args.density_tolerance,
            clip_hu=args.clip_hu,
            rtplan=args.rtplan,
            mesh=mesh,
            pictures=not args.no_pictures,
            overwrite=args.overwrite,
        )
        result = build_geometry(config)
    except GeometryInputError as err:
        return fail(str(err))
    print(
        f"series {result.series_instance_uid}: {len(result.organs)} structure(s), {result.materials} materials"
    )
    if result.clipped_voxels:
        print(f"note: {result.clipped_voxels} voxel(s) clipped to the calibration's HU range (--clip-hu)")
    for organ in result.organs:
        contour = (
            ""
            if organ.contour_to_mesh_max_mm is None
            else f", contours within {organ.contour_to_mesh_max_mm:.2f} mm"
        )
        print(
            f"{organ.name}: mask {organ.volume_mask_ml:.1f} mL, mesh {organ.volume_mesh_ml:.1f} mL "
            f"({organ.volume_difference_percent:+.2f} %){contour}"
        )
    seconds = ", ".join(f"{stage} {value:.1f} s" for stage, value in result.seconds.items())
    print(f"{result.out} ({seconds})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``geometry`` to the ``dose3d`` sub-commands."""
    geometry = sub.add_parser(
        "geometry",
        help="a segmented CT to a voxel phantom (labels, density, materials for GATE) and organ meshes (STL)",
    )
    geometry.add_argument("--dicom", type=Path, required=True, help="folder holding the CT series")
    structures = geometry.add_mutually_exclusive_group(required=True)
    structures.add_argument("--rtstruct", type=Path, help="RT Structure Set drawn on the CT")
    structures.add_argument(
        "--labels", type=Path, help="label image on the CT grid (dose3d segment's mask.nii.gz)"
    )
    geometry.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    geometry.add_argument(
        "--label-names",
        default="1=SPLEEN",
        help="names of the --labels values, e.g. 1=SPLEEN,2=LIVER (default 1=SPLEEN)",
    )
    geometry.add_argument(
        "--roi", action="append", help="RTSTRUCT ROI to use (repeat; default all with contours)"
    )
    geometry.add_argument(
        "--series", default=None, help="SeriesInstanceUID when the folder holds several CT series"
    )
    geometry.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="site HU-to-density CSV (hu,density_g_cm3); default Schneider 2000",
    )
    geometry.add_argument(
        "--density-tolerance",
        type=float,
        default=0.05,
        help="largest density range in one material, g/cm3 (0.05)",
    )
    geometry.add_argument(
        "--clip-hu", action="store_true", help="clip CT values outside the calibration's range"
    )
    geometry.add_argument(
        "--rtplan", type=Path, default=None, help="RT Plan: measure organ distances to its isocentres"
    )
    geometry.add_argument(
        "--mesh-formats", default="stl", help="comma-separated among stl, ply, obj (default stl)"
    )
    geometry.add_argument(
        "--smoothing", type=int, default=10, help="Taubin smoothing iterations (default 10)"
    )
    geometry.add_argument(
        "--decimation", type=float, default=0.5, help="fraction of mesh faces removed (default 0.5)"
    )
    geometry.add_argument("--no-pictures", action="store_true", help="skip the PNGs")
    geometry.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    geometry.set_defaults(func=_cmd_geometry)
