"""Label quality flags in the manifest: the case stays usable, the reason says what to look at (issue #23)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.cli import main
from dose3d_fl.data.label_checks import (
    INTERIOR_GAP,
    MIN_CASES_FOR_VOLUME_CHECK,
    OFF_SLICE_CONTOURS,
    VOLUME_OUTLIER,
    flag_volume_outliers,
)
from dose3d_fl.data.manifest import CaseEntry, LabelFlag, Manifest
from dose3d_fl.data.summary import format_summary_table, summarise_caches
from tests.data.dicom_builders import SMALL, Study, axial_geometry, ingest_manifest, load_case, make_study

# 4 mm slices: the organ (60 mm along the normal) lies on 15 of them.
FINE = axial_geometry(shape=(24, 20, 24), spacing=(6.0, 7.0, 4.0))


def _contour_heights(study: Study) -> np.ndarray:
    contours = study.rtstruct.ROIContourSequence[0].ContourSequence
    return np.array([float(c.ContourData[2]) for c in contours])


def _keep_contours(study: Study, keep: np.ndarray) -> None:
    item = study.rtstruct.ROIContourSequence[0]
    item.ContourSequence = [c for c, k in zip(item.ContourSequence, keep, strict=True) if k]


def _only(manifest: Manifest, check: str) -> LabelFlag:
    (case,) = manifest.cases
    (flag,) = [flag for flag in case.flags if flag.check == check]
    return flag


def test_organ_contoured_on_every_other_slice_is_flagged_and_kept(tmp_path: Path) -> None:
    study = make_study(FINE)
    heights = _contour_heights(study)
    levels = np.unique(heights)
    dropped = levels[1:-2:2]  # every other slice inside the organ, 6 of them
    assert len(dropped) == 6
    _keep_contours(study, ~np.isin(heights, dropped))
    study.write(tmp_path / "in")

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    flag = _only(manifest, INTERIOR_GAP)
    assert flag.reason.startswith(
        f"ROI 'SPLEEN': 6 of {len(levels)} slices inside its extent have no contour"
    )
    assert f"{dropped[0]:.1f}, {dropped[1]:.1f}" in flag.reason and "and 2 more" in flag.reason
    assert "every other slice" in flag.reason
    _, label, _ = load_case(tmp_path / "cache", manifest.cases[0])
    assert int((~label.any(axis=(0, 1))).sum()) == FINE.shape[2] - len(levels) + 6


def test_a_few_contours_between_slices_are_flagged_and_left_out(tmp_path: Path) -> None:
    study = make_study(SMALL)
    item = study.rtstruct.ROIContourSequence[0]
    top = max(_contour_heights(study))
    moved = 0
    for contour in item.ContourSequence:
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        if points[0, 2] == top:
            points[:, 2] += SMALL.spacing[2] / 2
            contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
            moved += 1
    study.write(tmp_path / "in")

    manifest = ingest_manifest(tmp_path / "in", tmp_path / "cache")
    flag = _only(manifest, OFF_SLICE_CONTOURS)
    total = len(item.ContourSequence)
    assert flag.reason.startswith(f"ROI 'SPLEEN': {moved} of {total} contours lie on no CT slice (e.g. at ")
    assert f"{top + SMALL.spacing[2] / 2:.2f} mm, nearest slice" in flag.reason
    assert not manifest.rejected
    assert [f.check for f in manifest.cases[0].flags] == [OFF_SLICE_CONTOURS]


def test_a_clean_contour_set_has_no_flags(tmp_path: Path) -> None:
    make_study(FINE).write(tmp_path / "in")
    assert ingest_manifest(tmp_path / "in", tmp_path / "cache").cases[0].flags == []


SCALES = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 0.92, 1.02)


def test_volume_far_outside_the_sites_range_is_flagged_only_with_enough_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(SCALES) == MIN_CASES_FOR_VOLUME_CHECK
    for i, scale in enumerate(SCALES):
        make_study(SMALL, seed=i, organ_scale=scale).write(tmp_path / "in" / f"p{i}")
    make_study(SMALL, seed=50, organ_scale=0.45).write(tmp_path / "in" / "small")
    cache = tmp_path / "cache"

    assert main(["ingest", "--input", str(tmp_path / "in"), "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    manifest = Manifest.load(cache)
    flagged = {case.structure_set: case.flags for case in manifest.cases if case.flags}
    assert list(flagged) == ["small/RS.dcm"]
    (flag,) = flagged["small/RS.dcm"]
    assert flag.check == VOLUME_OUTLIER
    assert "far outside this site's range" in flag.reason and "over 9 cases" in flag.reason
    assert f"flagged {manifest.flagged_cases[0].id} (small/RS.dcm): ROI 'SPLEEN': volume" in out
    assert "1 flagged)" in out
    table = format_summary_table(summarise_caches([cache]))
    assert table.splitlines()[2].split()[1:4] == ["9", "0", "1"]  # accepted, rejected, flagged
    assert "cache: label flags: volume_outlier 1" in table

    # Below the minimum number of cases the site's range is not judged, and the old flag goes.
    shutil.rmtree(tmp_path / "in" / "p0")
    shutil.rmtree(tmp_path / "in" / "p1")
    manifest = ingest_manifest(tmp_path / "in", cache)
    assert len(manifest.cases) == 7 and not manifest.flagged_cases


def _entry(case_id: str, volume: float, roi: str = "SPLEEN") -> CaseEntry:
    return CaseEntry(case_id, "", "", [1.0] * 3, [1] * 3, roi, volume, "LPS", "", "", "")


def test_volume_check_groups_by_roi_and_survives_equal_volumes() -> None:
    cases = [_entry(f"s{i}", 200.0) for i in range(7)] + [_entry("big", 900.0), _entry("s7", 210.0)]
    cases += [_entry(f"l{i}", 1500.0 + i, roi="LIVER") for i in range(3)]
    flag_volume_outliers(cases)
    assert [case.id for case in cases if case.flags] == ["big"]
    flag_volume_outliers(cases)  # re-running replaces, never duplicates
    assert len(cases[7].flags) == 1
