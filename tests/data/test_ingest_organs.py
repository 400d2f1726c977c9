"""Ingestion of several organs: TG-263 mapping of the ROI names (never a guess), partial delineation, one
integer label with a stated overlap rule, and the cache's organs read in a task's order."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.uid import generate_uid

from dose3d_fl.cli import main
from dose3d_fl.data.cases import LABEL_VALUES, LABELLED, load_site_cases
from dose3d_fl.data.contours import polygons_from_field
from dose3d_fl.data.ingest import ORGAN_OVERLAP, IngestConfig, IngestError, ingest_site
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.rtstruct import RoiContours, build_rtstruct
from dose3d_fl.data.summary import format_summary_table, summarise_caches
from dose3d_fl.data.tg263 import SiteRoiMapping
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.transforms import eval_transforms
from tests.data.dicom_builders import SMALL, Study, as_physician_delineation, make_study, organ_field

# A second organ: a ball of 20 mm radius beside the ellipsoid of make_study (which spans x -30..50 mm).
BALL_CENTRE = np.array([-45.0, -5.0, 0.0])


def _ball(points: np.ndarray, centre: np.ndarray = BALL_CENTRE, radius: float = 20.0) -> np.ndarray:
    return np.sqrt(((points - centre) ** 2).sum(axis=-1)) - radius


def organs_study(rois: dict[str, str], seed: int = 0) -> Study:
    """A study whose structure set holds ROIs named by ``rois`` (name -> "ellipsoid", "ball" or "overlap")."""
    study = make_study(SMALL, seed=seed)
    geometry = study.geometry
    points = geometry.voxel_points()
    fields = {
        "ellipsoid": organ_field(points),
        "ball": _ball(points),
        # A ball reaching 15 mm into the ellipsoid's left end: the two contours overlap.
        "overlap": _ball(points, np.array([-40.0, -5.0, 0.0]), 25.0),
    }
    contours = []
    for name, shape in rois.items():
        field = fields[shape]
        slices = geometry.shape[2]
        polygons = {
            k: polygons_from_field(field[:, :, k].T) for k in range(slices) if (field[:, :, k] < 0).any()
        }
        contours.append(RoiContours(name, (255, 0, 0), "ORGAN", polygons))
    uids = tuple(str(ds.SOPInstanceUID) for ds in study.ct)
    study.rtstruct = as_physician_delineation(
        build_rtstruct(
            study.ct[0],
            uids,
            geometry,
            contours,
            sop_instance_uid=generate_uid(),
            series_instance_uid=generate_uid(),
        )
    )
    study.truth = {shape: fields[shape] < 0 for shape in rois.values()}
    return study


def _label(cache: Path, manifest: Manifest, index: int = 0) -> np.ndarray:
    return np.asarray(nib.load(cache / manifest.cases[index].label).dataobj)


def test_mapped_organs_share_one_label_and_an_unmapped_roi_is_reported_not_guessed(tmp_path: Path) -> None:
    organs_study({"SPLEEN_P": "ellipsoid", "PANC": "ball", "PTV_1": "ball"}).write(tmp_path / "in")
    config = IngestConfig(organs=("Spleen", "Pancreas"))

    manifest = ingest_site(tmp_path / "in", tmp_path / "cache", config).manifest

    # SPLEEN_P is in the alias table; PANC is in none: the pancreas stays unlabelled (not background), and the
    # name is reported once with the suggestion, which is not applied.
    (case,) = manifest.cases
    assert manifest.organs == ["Spleen", "Pancreas"]
    assert case.labelled == ["Spleen"] and case.rois == {"Spleen": "SPLEEN_P"}
    [unmapped] = manifest.unmapped_rois
    assert unmapped.roi == "PANC" and unmapped.structure_sets == 1
    assert unmapped.message.startswith("unmapped ROI 'PANC': did you mean Pancreas?")
    assert 'Add "PANC": "Pancreas" to roi_names.json' in unmapped.message
    assert set(np.unique(_label(tmp_path / "cache", manifest))) == {0, 1}
    assert Manifest.load(tmp_path / "cache") == manifest  # the new keys round-trip

    # The site's own file maps it: the pancreas is labelled 2, the case converted again.
    mapping = SiteRoiMapping.from_dict({"PANC": "Pancreas"}, source="local/roi_names.json")
    report = ingest_site(
        tmp_path / "in", tmp_path / "cache", IngestConfig(("Spleen", "Pancreas"), roi_names=mapping)
    )
    case = report.manifest.cases[0]
    assert report.converted and case.labelled == ["Spleen", "Pancreas"] and not report.manifest.unmapped_rois
    assert case.rois == {"Spleen": "SPLEEN_P", "Pancreas": "PANC"}
    assert report.manifest.roi_names_file == "local/roi_names.json"
    label = _label(tmp_path / "cache", report.manifest)
    assert set(np.unique(label)) == {0, 1, 2}
    assert case.organ_volumes_ml["Pancreas"] == pytest.approx(
        float((label == 2).sum()) * np.prod(case.spacing) / 1000, abs=0.01
    )


def test_overlapping_contours_go_to_the_smaller_organ_and_are_flagged(tmp_path: Path) -> None:
    study = organs_study({"Liver": "ellipsoid", "Pancreas": "overlap"})
    study.write(tmp_path / "in")

    manifest = ingest_site(
        tmp_path / "in", tmp_path / "cache", IngestConfig(organs=("Liver", "Pancreas"))
    ).manifest

    label = _label(tmp_path / "cache", manifest)
    assert set(np.unique(label)) == {0, 1, 2}
    flags = [flag for flag in manifest.cases[0].flags if flag.check == ORGAN_OVERLAP]
    assert len(flags) == 1 and "went to Pancreas, the smaller" in flags[0].reason
    # Every voxel the pancreas contour covers is pancreas, also where the liver's contour covers it too: its
    # volume is that of the pancreas ingested alone; the liver loses the shared voxels.
    volumes = manifest.cases[0].organ_volumes_ml
    alone = {
        organ: ingest_site(tmp_path / "in", tmp_path / organ, IngestConfig(organs=(organ,)))
        .manifest.cases[0]
        .organ_volumes_ml[organ]
        for organ in ("Liver", "Pancreas")
    }
    assert volumes["Pancreas"] == alone["Pancreas"]
    assert volumes["Liver"] < alone["Liver"]
    assert volumes["Liver"] + volumes["Pancreas"] < alone["Liver"] + alone["Pancreas"]


def test_a_structure_set_without_any_task_organ_is_rejected_with_its_rois(tmp_path: Path) -> None:
    organs_study({"Spleen": "ellipsoid", "Xyzzy": "ball"}).write(tmp_path / "in")
    with pytest.raises(IngestError, match="no usable case"):
        ingest_site(tmp_path / "in", tmp_path / "cache", IngestConfig(organs=("Liver", "Kidney_L")))
    manifest = Manifest.load(tmp_path / "cache")
    (rejection,) = manifest.rejected
    assert rejection.reason.startswith(
        "none of the task's organs (Liver, Kidney_L) is delineated (ROIs: Spleen, Xyzzy)"
    )
    assert "unmapped ROI names in the manifest" in rejection.reason
    assert [name.roi for name in manifest.unmapped_rois] == ["Xyzzy"]


def test_two_rois_of_one_organ_leave_it_unlabelled_with_the_reason(tmp_path: Path) -> None:
    organs_study({"Spleen": "ellipsoid", "SPLEEN_P": "ball", "Liver": "ball"}).write(tmp_path / "in")
    manifest = ingest_site(
        tmp_path / "in", tmp_path / "cache", IngestConfig(organs=("Spleen", "Liver"))
    ).manifest
    (case,) = manifest.cases
    assert case.labelled == ["Liver"]
    conflict = [flag.reason for flag in case.flags if flag.check == "roi_conflict"]
    assert conflict and "map to the same organ, Spleen" in conflict[0]


def test_roi_option_is_a_one_organ_task_named_exactly(tmp_path: Path) -> None:
    organs_study({"Milz-alt": "ellipsoid"}).write(tmp_path / "in")
    with pytest.raises(ValueError, match="one ROI of a one-organ task"):
        IngestConfig(organs=("Spleen", "Liver"), roi="Milz-alt")
    manifest = ingest_site(tmp_path / "in", tmp_path / "cache", IngestConfig(roi="milz-alt")).manifest
    assert manifest.organs == ["Spleen"] and manifest.cases[0].labelled == ["Spleen"]
    assert IngestConfig(roi="LIVER").organs == ("Liver",)  # a name the table knows names the organ


def test_cache_organs_are_read_in_the_task_order(tmp_path: Path) -> None:
    """Cache order (Spleen, Pancreas); task order (Pancreas, Liver, Spleen): values are remapped at load, the
    liver, which the cache does not have, is unlabelled for every case, and a case without a task organ is
    left out."""
    for seed in (1, 2):
        organs_study({"Spleen": "ellipsoid", "Pancreas": "ball"}, seed=seed).write(
            tmp_path / "in" / f"p{seed}"
        )
    ingest_site(tmp_path / "in", tmp_path / "cache", IngestConfig(organs=("Spleen", "Pancreas")))

    (site,) = load_site_cases([tmp_path / "cache"], organs=("Pancreas", "Liver", "Spleen"))
    cases = site.train + site.val
    assert len(cases) == 2
    for case in cases:
        assert case[LABELLED].tolist() == [True, False, True]
        assert case[LABEL_VALUES].tolist() == [0, 3, 1]  # cache value -> task value
        # The trainer's preprocessing reads the label in the task's order: pancreas 1, spleen 3.
        profile = get_profile().replace(organs=("Pancreas", "Liver", "Spleen"))
        loaded = eval_transforms(profile)(case)
        assert {int(v) for v in loaded["label"].unique()} == {0, 1, 3} and LABEL_VALUES not in loaded
        cache_order = eval_transforms(get_profile())({k: case[k] for k in ("image", "label")})
        assert torch.equal(loaded["label"] == 1, cache_order["label"] == 2)
    (site,) = load_site_cases([tmp_path / "cache"], organs=("Spleen", "Pancreas"))
    assert all(LABEL_VALUES not in case for case in site.train + site.val)  # the cache's own order
    assert load_site_cases([tmp_path / "cache"], organs=("Liver",))[0].train == []


def test_cli_ingest_prints_every_unmapped_name_and_reads_the_site_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    organs_study({"Spleen": "ellipsoid", "PANC": "ball"}).write(tmp_path / "in")
    args = ["ingest", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "cache")]

    assert main([*args, "--organs", "Spleen,Pancreas"]) == 0
    out = capsys.readouterr().out
    assert "unmapped ROI 'PANC': did you mean Pancreas?" in out and "[1 structure set(s)]" in out

    # The site's roi_names.json next to its dose3d_site.json (the workspace's local/ folder) is read.
    local = tmp_path / "workspace" / "local"
    local.mkdir(parents=True)
    (local / "roi_names.json").write_text(json.dumps({"PANC": "Pancreas"}))
    monkeypatch.chdir(tmp_path / "workspace")
    assert main([*args, "--organs", "Spleen,Pancreas"]) == 0
    out = capsys.readouterr().out
    assert "unmapped" not in out and "roi_names.json and the TG-263 alias table" in out
    assert Manifest.load(tmp_path / "cache").cases[0].labelled == ["Spleen", "Pancreas"]
    summary = format_summary_table(summarise_caches([tmp_path / "cache"]))
    assert "Pancreas" in summary and "1/1" in summary

    assert main([*args, "--organs", "Spleen,Pancreas", "--roi-names", str(tmp_path / "none.json")]) == 2
    assert "--roi-names" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--organs", "Spleen,Splen"])
    assert "did you mean Spleen" in capsys.readouterr().err
