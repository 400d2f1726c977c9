"""``dose3d geometry`` on a synthetic patient: the issue's "done when", bad inputs, and no half-written output."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dose3d_fl.cli import main
from dose3d_fl.geometry import build as build_module
from dose3d_fl.geometry.build import GeometryConfig, build_geometry
from dose3d_fl.geometry.calibration import schneider_2000
from dose3d_fl.geometry.errors import GeometryInputError
from dose3d_fl.geometry.gate_format import read_gate_database, read_hu_ranges, read_index_ranges
from dose3d_fl.geometry.materials import read_materials_csv
from dose3d_fl.geometry.meshes import read_mesh, surface_distances
from dose3d_fl.geometry.nomenclature import tg263_name
from dose3d_fl.geometry.structures import read_rtstruct
from tests.geometry.synthetic_patient import ORGANS, SyntheticPatient, write_patient, write_rtplan


def test_every_mesh_is_watertight_and_within_3_percent_of_its_mask(built) -> None:
    result, out = built
    labels = np.asarray(nib.load(out / "phantom" / "labels.nii.gz").dataobj)
    assert [o.name for o in result.organs] == ["External", "Liver", "Spleen", "Kidney_L", "Kidney_R"]
    for organ in result.organs:
        for suffix in ("stl", "ply", "obj"):
            mesh = read_mesh(out / "meshes" / f"{organ.name}.{suffix}")
            assert mesh.is_watertight, f"{organ.name}.{suffix}"
            assert abs(mesh.volume / 1000 - organ.volume_mask_ml) / organ.volume_mask_ml < 0.03
        assert abs(organ.volume_difference_percent) < 3.0
        assert organ.label in np.unique(labels)


def test_rtstruct_contour_points_lie_within_one_voxel_of_their_mesh(built, patient: SyntheticPatient) -> None:
    _, out = built
    _, structure_set = read_rtstruct(patient.rtstruct)
    voxel = min(patient.geometry.spacing)
    worst = {}
    for source, roi in structure_set.rois.items():
        name = tg263_name(source).name
        mesh = read_mesh(out / "meshes" / f"{name}.stl")
        worst[name] = float(surface_distances(mesh, np.concatenate(roi.contours)).max())
    assert max(worst.values()) <= voxel, worst
    summary = json.loads((out / "summary.json").read_text())
    assert {o["name"]: o["contour_to_mesh_max_mm"] for o in summary["organs"]} == pytest.approx(
        worst, abs=1e-2
    )


def test_every_voxel_has_a_material_and_a_density_inside_the_calibration(built) -> None:
    _, out = built
    materials = np.asarray(nib.load(out / "phantom" / "materials.nii.gz").dataobj)
    density = np.asarray(nib.load(out / "phantom" / "density.nii.gz").dataobj)
    hu = np.asarray(nib.load(out / "phantom" / "ct_hu.nii.gz").dataobj)
    table = read_materials_csv(out / "materials" / "materials.csv")
    known = {m.index for m in table.materials}
    assert set(np.unique(materials)) <= known and materials.min() >= 1
    low, high = schneider_2000().density_range
    assert np.isfinite(density).all() and density.min() >= low and density.max() <= high
    by_index = table.by_index()
    for index in np.unique(materials):
        voxels = hu[materials == index]
        assert by_index[int(index)].hu_min <= voxels.min() and voxels.max() < by_index[int(index)].hu_max


def test_material_table_round_trips_through_the_gate_readers(built) -> None:
    _, out = built
    table = read_materials_csv(out / "materials" / "materials.csv")
    database = read_gate_database(out / "gate" / "materials.db")
    ranges = read_hu_ranges(out / "gate" / "hu_to_materials.txt")
    assert ranges == [(m.hu_min, m.hu_max, m.name) for m in table.materials]
    assert read_index_ranges(out / "gate" / "voxel_materials.json") == [
        (m.index, m.index + 1, m.name) for m in table.materials
    ]
    for m in table.materials:
        assert database[m.name].density == pytest.approx(m.density, rel=1e-6)
        assert database[m.name].fractions == pytest.approx(m.fractions, abs=1e-7)
    # GATE's label image from the HU image and the ranges equals the material map.
    hu = np.asarray(nib.load(out / "phantom" / "ct_hu.nii.gz").dataobj)
    materials = np.asarray(nib.load(out / "phantom" / "materials.nii.gz").dataobj)
    lows = np.array([low for low, _, _ in ranges])
    gate_index = np.digitize(hu, lows)  # as opengate's ImageVolume.create_label_image bins the image
    assert np.array_equal(gate_index, materials)


def test_outputs_are_complete_and_described(built) -> None:
    result, out = built
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "phantom/labels.csv" in names and "pictures/slices.png" in names and "pictures/meshes.png" in names
    assert "gate/materials.db" in names and "materials/calibration.csv" in names and "README.txt" in names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], (
        "a staging folder was left behind"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"]["frame"].startswith("DICOM patient coordinates, LPS")
    assert (
        summary["calibration"]["source"].startswith("Schneider")
        and summary["materials"]["count"] == result.materials
    )
    labels = (out / "phantom" / "labels.csv").read_text()
    assert "1,External,BODY,yes,EXTERNAL" in labels and "3,Spleen,SPLEEN,yes,ORGAN" in labels


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["geometry", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_existing_output_folder_is_refused_unless_overwrite(patient, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a previous run")
    code, _, err = _cli(capsys, "--dicom", patient.ct_dir, "--rtstruct", patient.rtstruct, "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert (
        err
        == f"dose3d: error: output folder {out} exists; choose another --out or pass --overwrite to replace it\n"
    )
    assert (out / "keep.txt").exists()
    code, printed, err = _cli(
        capsys, "--dicom", patient.ct_dir, "--rtstruct", patient.rtstruct, "--roi", "SPLEEN", "--out", out,
        "--overwrite", "--no-pictures",
    )  # fmt: skip
    assert code == 0 and err == ""
    assert (
        "Spleen: mask" in printed
        and not (out / "keep.txt").exists()
        and (out / "meshes" / "Spleen.stl").exists()
    )
    assert not (out / "pictures").exists()


def test_a_failure_while_writing_leaves_no_output_and_keeps_the_previous_one(
    patient, tmp_path: Path, monkeypatch
) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(build_module, "save_mesh_view", broken)
    config = GeometryConfig(
        dicom=patient.ct_dir, rtstruct=patient.rtstruct, out=tmp_path / "out", roi_names=("SPLEEN",)
    )
    with pytest.raises(OSError, match="disk full"):
        build_geometry(config)
    assert list(tmp_path.iterdir()) == []
    previous = tmp_path / "out"
    previous.mkdir()
    (previous / "keep.txt").write_text("a previous run")
    with pytest.raises(OSError, match="disk full"):
        build_geometry(dataclasses.replace(config, overwrite=True))
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (previous / "keep.txt").exists()


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        (
            "hu,density_g_cm3\n-1024,0.001\n100,1.12\n101,1.07\n3071,2.8\n",
            "is not monotonic|not monotonic: density falls",
        ),
        (
            "hu,density_g_cm3\n-1000,0.001\n2000,2.0\n",
            "covers -1000 to 2000 HU but CT series .* holds -1024 to",
        ),
    ],
    ids=["non-monotonic", "does-not-cover"],
)
def test_bad_calibration_exits_2_in_one_line(patient, tmp_path: Path, capsys, rows: str, reason: str) -> None:
    calibration = tmp_path / "site.csv"
    calibration.write_text(rows)
    out = tmp_path / "out"
    code, _, err = _cli(
        capsys, "--dicom", patient.ct_dir, "--rtstruct", patient.rtstruct, "--roi", "SPLEEN", "--calibration",
        calibration, "--out", out,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and err.startswith("dose3d: error: ")
    assert re.search(reason, err), err
    assert not out.exists()


def test_clip_hu_uses_a_short_calibration(patient, tmp_path: Path) -> None:
    calibration = tmp_path / "site.csv"
    calibration.write_text("hu,density_g_cm3\n-1000,0.001\n0,1.0\n2000,2.0\n")
    config = GeometryConfig(
        dicom=patient.ct_dir, rtstruct=patient.rtstruct, out=tmp_path / "out", roi_names=("SPLEEN",),
        calibration=calibration, clip_hu=True, pictures=False,
    )  # fmt: skip
    result = build_geometry(config)
    assert result.clipped_voxels > 0
    density = np.asarray(nib.load(tmp_path / "out" / "phantom" / "density.nii.gz").dataobj)
    assert density.min() >= 0.001 and density.max() <= 2.0
    assert "site calibration site.csv" in (tmp_path / "out" / "materials" / "calibration.csv").read_text()


def _other_frame(ds) -> None:
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3"


def _liver_without_contours(ds) -> None:
    del ds.ROIContourSequence[1].ContourSequence


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_other_frame, "RTSTRUCT RS_edited.dcm does not reference the CT: it references series"),
        (_liver_without_contours, "ROI 'LIVER' in RTSTRUCT RS_edited.dcm has no contours"),
    ],
    ids=["not-referencing-the-ct", "organ-without-contours"],
)
def test_bad_structures_exit_2_in_one_line(patient, tmp_path: Path, capsys, edit, reason: str) -> None:
    edited = tmp_path / "RS_edited.dcm"
    ds = read_rtstruct(patient.rtstruct)[0]
    edit(ds)
    ds.save_as(edited, enforce_file_format=True)
    code, _, err = _cli(capsys, "--dicom", patient.ct_dir, "--rtstruct", edited, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and err.startswith("dose3d: error: ") and reason in err, err
    assert not (tmp_path / "out").exists()


def test_feet_first_patient(tmp_path: Path) -> None:
    patient = write_patient(tmp_path / "ffs", seed=3, position="FFS", organs=ORGANS[2:3])
    result = build_geometry(
        GeometryConfig(dicom=patient.ct_dir, rtstruct=patient.rtstruct, out=tmp_path / "out", pictures=False)
    )
    (spleen,) = result.organs
    assert spleen.watertight and abs(spleen.volume_difference_percent) < 3.0
    assert spleen.contour_to_mesh_max_mm <= min(patient.geometry.spacing)
    truth = patient.fields["SPLEEN"] < 0
    centre = patient.geometry.affine_lps @ np.append(np.argwhere(truth).mean(axis=0), 1.0)
    assert np.allclose(spleen.centroid_lps_mm, centre[:3], atol=2.0)


def test_output_inside_an_input_is_refused(patient) -> None:
    with pytest.raises(GeometryInputError, match="holds the input"):
        build_geometry(
            GeometryConfig(
                dicom=patient.ct_dir, rtstruct=patient.rtstruct, out=patient.ct_dir.parent, overwrite=True
            )
        )


def test_labels_from_dose3d_segment(patient, tmp_path: Path, capsys) -> None:
    mask = (patient.fields["SPLEEN"] < 0).astype(np.uint8)
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, patient.geometry.affine_ras), path)
    centre = patient.geometry.affine_lps @ np.append(np.argwhere(mask).mean(axis=0), 1.0)
    plan = write_rtplan(tmp_path / "RP.dcm", str(patient.ct[0].FrameOfReferenceUID), [tuple(centre[:3])])
    code, printed, err = _cli(
        capsys, "--dicom", patient.ct_dir, "--labels", path, "--rtplan", plan, "--out", tmp_path / "out",
        "--no-pictures",
    )  # fmt: skip
    assert code == 0, err
    assert "Spleen: mask" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (spleen,) = summary["organs"]
    assert spleen["contour_to_mesh_max_mm"] is None and spleen["watertight"]
    (isocentre,) = spleen["isocentres"]
    assert isocentre["inside"] and isocentre["to_centroid_mm"] < 0.1 and isocentre["beams"] == ["B1"]
    assert "isocentre (B1)" in (tmp_path / "out" / "summary.txt").read_text()
