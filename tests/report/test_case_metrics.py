"""The report's per-case figures on known geometry: MONAI's metrics in mm, the worst and median case, the
validation cases read from a cache, the heatmap's colour scale, slice positions and the model's provenance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dose3d_fl.clinical.inference import load_predictor
from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.clinical.overlay import slice_positions_mm
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.data.geometry import LPS_TO_RAS
from dose3d_fl.data.manifest import CaseEntry, Manifest
from dose3d_fl.report.case_metrics import (
    CaseMetrics,
    MaskComparison,
    compare_masks,
    evaluate_site,
    validation_cases,
    worst_and_median,
    write_cases_csv,
)
from dose3d_fl.report.plots import colour_range
from dose3d_fl.report.provenance import NOT_RECORDED, provenance_rows, read_provenance
from dose3d_fl.seg.checkpoint import SegCheckpoint, save_checkpoint
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile
from tests.seg.organ_sites import ORGANS, organ_sites


def _cube(shape: tuple[int, int, int] = (20, 20, 20), start: int = 5, size: int = 8, axis_shift: int = 0):
    mask = np.zeros(shape, dtype=bool)
    lo = [start] * 3
    lo[0] += axis_shift
    mask[lo[0] : lo[0] + size, lo[1] : lo[1] + size, lo[2] : lo[2] + size] = True
    return mask


def test_identical_masks_score_perfectly_and_volumes_are_in_ml() -> None:
    cube = _cube()
    result = compare_masks(cube, cube, (2.0, 2.0, 3.0))
    assert result.dice == 1.0 and result.hd95_mm == 0.0 and result.surface_dice == 1.0
    assert result.label_ml == pytest.approx(8**3 * 12 / 1000) and result.volume_difference_ml == 0.0


def test_distances_are_in_millimetres_of_the_grid() -> None:
    label, shifted = _cube(), _cube(axis_shift=1)  # one voxel along axis 0
    coarse = compare_masks(shifted, label, (3.0, 1.0, 1.0))
    fine = compare_masks(shifted, label, (1.5, 1.0, 1.0))
    assert coarse.hd95_mm == pytest.approx(3.0) and fine.hd95_mm == pytest.approx(1.5)
    # 2 mm tolerance: a 1.5 mm offset is within it everywhere, a 3 mm offset is not on the shifted faces.
    assert fine.surface_dice == pytest.approx(1.0) and coarse.surface_dice < 0.95
    assert coarse.dice == pytest.approx(2 * 7 * 64 / (2 * 8**3))


def test_empty_masks_give_dice_zero_and_no_distance() -> None:
    empty, cube = np.zeros((20, 20, 20), dtype=bool), _cube()
    for predicted, label in ((empty, cube), (cube, empty), (empty, empty)):
        result = compare_masks(predicted, label, (1.0, 1.0, 1.0))
        assert result.dice == 0.0 and result.hd95_mm is None and result.surface_dice is None
    with pytest.raises(ValueError, match="not on one grid"):
        compare_masks(cube, cube[:-1], (1.0, 1.0, 1.0))


def _row(case: str, dice: float, site: str = "site-1") -> CaseMetrics:
    return CaseMetrics(site, case, "SPLEEN", (1.0, 1.0, 1.0), MaskComparison(10.0, 9.0, dice, 2.0, 0.9))


def test_worst_and_median_are_real_cases() -> None:
    assert worst_and_median([]) == []
    assert [(r, c.case_id) for r, c in worst_and_median([_row("a", 0.9)])] == [("only case", "a")]
    two = worst_and_median([_row("a", 0.9), _row("b", 0.8)])
    assert [(r, c.case_id) for r, c in two] == [("worst", "b"), ("median", "a")]
    four = worst_and_median([_row("a", 0.95), _row("b", 0.7), _row("c", 0.9), _row("d", 0.8)])
    assert [(r, c.case_id) for r, c in four] == [("worst", "b"), ("median", "c")]
    ties = worst_and_median([_row("z", 0.8), _row("y", 0.8), _row("x", 0.9)])
    assert [c.case_id for _, c in ties] == ["y", "z"]  # equal Dice: by case id


def test_cases_csv_is_keyed_by_site_case_and_organ(tmp_path: Path) -> None:
    rows = [
        _row("a", 0.9),
        CaseMetrics("site-2", "b", "LIVER", (2.5, 2.5, 3.0), MaskComparison(1, 2, 0, None, None)),
    ]
    with write_cases_csv(rows, tmp_path / "cases.csv").open() as stream:
        read = list(csv.DictReader(stream))
    assert [(r["site"], r["case"], r["organ"]) for r in read] == [
        ("site-1", "a", "SPLEEN"),
        ("site-2", "b", "LIVER"),
    ]
    assert (
        read[1]["spacing_mm"] == "2.5 x 2.5 x 3" and read[1]["hd95_mm"] == "" and read[0]["dice"] == "0.9000"
    )


def _case(case_id: str) -> CaseEntry:
    return CaseEntry(
        id=case_id,
        image=f"images/{case_id}.nii.gz",
        label=f"labels/{case_id}.nii.gz",
        spacing=[1.0, 1.0, 1.0],
        shape=[4, 4, 4],
        roi="SPLEEN",
        roi_volume_ml=0.01,
        orientation="LPS",
        source="CT",
        structure_set="RS.dcm",
        fingerprint="0",
    )


def test_validation_cases_come_from_split_json_with_reasons(tmp_path: Path) -> None:
    cache = tmp_path / "site-9"
    cache.mkdir()
    ids = ["case-a", "case-b", "case-c"]
    Manifest(roi="SPLEEN", cases=[_case(i) for i in ids]).save(cache)
    cases, reasons = validation_cases(cache)
    assert cases == [] and reasons == [
        "site-9: no split.json, so its validation cases are unknown; not evaluated"
    ]
    (cache / "split.json").write_text(json.dumps({"train": ids[2:], "val": [ids[0], "case-gone", ids[1]]}))
    cases, reasons = validation_cases(cache)
    assert [c.id for c in cases] == ids[:2]
    assert reasons == ["site-9 case-gone: in split.json but not in the manifest"]
    (cache / "split.json").write_text("{not json")
    cases, (reason,) = validation_cases(cache)
    assert (
        cases == []
        and reason.startswith("site-9: cannot read its manifest or split.json (")
        and "\n" not in reason
    )


def test_heatmap_colour_scale_spans_the_data() -> None:
    values = np.array([[0.93, 0.95], [np.nan, 0.961]])
    assert colour_range(values) == (0.93, 0.961)
    assert colour_range(np.array([[0.9, 0.9]])) == pytest.approx((0.89, 0.91))
    assert colour_range(np.array([[np.nan]])) == (0.0, 1.0)


def test_slice_positions_are_dicom_patient_coordinates() -> None:
    # A grid stored L->R, P->A (LPS axes, as DICOM stores it): 2 x 2 x 3 mm voxels from (10, 20, 30) mm.
    affine_lps = np.diag([2.0, 2.0, 3.0, 1.0])
    affine_lps[:3, 3] = (10.0, 20.0, 30.0)
    shape = (8, 6, 5)
    # The views cut the RAS-reoriented grid, where axes 0 and 1 run the other way.
    position = slice_positions_mm(LPS_TO_RAS @ affine_lps, shape, (1, 2, 3))
    assert position == pytest.approx({"x": 10 + 2 * (8 - 1 - 1), "y": 20 + 2 * (6 - 1 - 2), "z": 30 + 3 * 3})


def test_provenance_reads_what_the_file_records(tmp_path: Path) -> None:
    weights = {"w": torch.zeros(2)}
    old = tmp_path / "old.pt"
    torch.save({"model": weights}, old)
    provenance = read_provenance(old)
    assert provenance.recorded == {} and provenance.profile is None and len(provenance.file_sha256) == 64
    assert all(value == NOT_RECORDED for _, value in provenance_rows(provenance))

    new = tmp_path / "new.pt"
    recorded = {
        "profile": "cpu-small",
        "task": {"organs": ["SPLEEN", "LIVER"], "spacing_mm": [4.0, 4.0, 4.0], "extra": 1},
        "job_name": "seg_fedavg",
        "round": 25,
        "software": {"dose3d_fl": "0.1", "monai": "1.6.1"},
        "comment": "x",
    }
    torch.save({"model": weights, "provenance": recorded, "profile": get_profile("cpu-small").to_dict()}, new)
    rows = dict(provenance_rows(read_provenance(new)))
    assert rows["organs"] == "SPLEEN, LIVER" and rows["training voxel size (mm)"] == "4.0 x 4.0 x 4.0"
    assert rows["round"] == "25" and rows["software"] == "dose3d_fl 0.1; monai 1.6.1"
    assert rows["training crop (voxels)"] == NOT_RECORDED and rows["job id"] == NOT_RECORDED
    assert rows["task extra"] == "1" and rows["comment"] == "x"
    assert read_provenance(new).profile["name"] == "cpu-small"

    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    problem = read_provenance(broken).problem
    assert problem.startswith(f"{broken} cannot be read (") and "\n" not in problem


def test_every_delineated_organ_of_a_case_is_a_row_against_its_own_label(tmp_path: Path) -> None:
    """A multi-organ cache: one row per (case, organ) the case delineates, named by TG-263, each compared with
    that organ's own label value (not the union of the organs), in the model's organ order."""
    caches = organ_sites(tmp_path)
    load_site_cases(caches, organs=ORGANS)  # draws each site's split (split.json)
    profile = get_profile(organs=ORGANS[::-1])  # the model's order need not be the cache's
    model_file = save_checkpoint(
        tmp_path / "model.pt", SegCheckpoint(build_network(profile).state_dict(), profile)
    )
    predictor = load_predictor(load_segmentation_model(model_file))
    for cache in caches:
        manifest = Manifest.load(cache)
        site = evaluate_site(predictor, cache)
        assert not site.skipped and site.organs == list(ORGANS)
        val = [case for case in manifest.cases if case.id in site.cases]
        expected = {(case.id, organ) for case in val for organ in manifest.case_organs(case)}
        assert {(row.case_id, row.organ) for row in site.rows} == expected
        for row in site.rows:
            label_image = nib.load(cache / site.cases[row.case_id].label)
            organ_voxels = (np.asarray(label_image.dataobj) == ORGANS.index(row.organ) + 1).sum()
            voxel_ml = float(np.prod(row.spacing_mm)) / 1000.0
            assert row.metrics.label_ml == pytest.approx(float(organ_voxels) * voxel_ml)
            assert site.predicted_mask(row.case_id, row.organ).shape == label_image.shape[:3]
