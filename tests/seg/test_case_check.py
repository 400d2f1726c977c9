"""Bad input in a site cache during training: each bad case is named once, skipped, and training goes on."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dose3d_fl.seg.case_check import case_problem, usable_cases
from dose3d_fl.seg.trainer import SegTrainer
from tests.seg.cases import TINY_PROFILE, write_case


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty_label(path: Path) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), path)


@pytest.fixture()
def bad_cache(tmp_path: Path) -> tuple[list[dict], list[dict]]:
    train = [write_case(tmp_path, f"good-{i}", seed=i) for i in range(3)]
    corrupt = write_case(tmp_path, "corrupt", seed=10)
    _truncate(Path(corrupt["image"]))
    missing = write_case(tmp_path, "missing", seed=11)
    Path(missing["label"]).unlink()
    empty = write_case(tmp_path, "empty", seed=12)
    _empty_label(Path(empty["label"]))
    val = [write_case(tmp_path, "val-0", seed=100), write_case(tmp_path, "val-gone", seed=101)]
    Path(val[1]["image"]).unlink()
    return [train[0], corrupt, train[1], missing, empty, train[2]], val


def test_each_problem_is_named(bad_cache) -> None:
    train, _ = bad_cache
    problems = {case["id"]: case_problem(case) for case in train}
    assert problems["good-0"] is None
    assert "image file" in problems["corrupt"] and "not a readable NIfTI" in problems["corrupt"]
    assert "label file" in problems["missing"] and "is missing" in problems["missing"]
    assert "is empty (no voxel of the ROI)" in problems["empty"]


def test_training_skips_bad_cases_and_goes_on(bad_cache, caplog) -> None:
    train, val = bad_cache
    trainer = SegTrainer(train, val, TINY_PROFILE, num_threads=1)  # a trainer builds; nothing is read yet
    with caplog.at_level(logging.ERROR, logger="dose3d_fl.seg.case_check"):
        stats = trainer.train_epochs(1)
        metrics = trainer.validate()

    assert stats["steps"] == 2  # the 3 good cases, 2 per step
    assert metrics["cases"] == 1 and set(metrics["case_dice"]) <= {"val-0"}
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4  # one line per bad case, not one per epoch or step
    for name in (
        "training case corrupt skipped",
        "training case missing skipped",
        "training case empty skipped",
        "validation case val-gone skipped",
    ):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert all("\n" not in line and "re-run `dose3d ingest`" in line for line in lines)

    trainer.train_epochs(1)  # later rounds train on the same usable cases, without new errors
    assert len(caplog.records) == 4


def test_no_usable_training_case_is_a_clear_error(bad_cache) -> None:
    train, val = bad_cache
    trainer = SegTrainer([train[1], train[3]], val, TINY_PROFILE, num_threads=1)
    with pytest.raises(ValueError, match="no usable training case"):
        trainer.train_epochs(1)


def test_usable_cases_keeps_order(bad_cache) -> None:
    train, _ = bad_cache
    assert [case["id"] for case in usable_cases(train, "training")] == ["good-0", "good-1", "good-2"]


def test_a_synthetic_pair_without_an_organ_is_a_negative_example(tmp_path: Path) -> None:
    from dose3d_fl.seg.synthetic import synthetic_cases

    real = write_case(tmp_path / "real", "empty", seed=3)
    _empty_label(Path(real["label"]))
    folder = tmp_path / "synthetic"
    folder.mkdir()
    pair = write_case(tmp_path / "pair", "p", seed=4)
    Path(pair["image"]).rename(folder / "sample-0001_image.nii.gz")
    Path(pair["label"]).rename(folder / "sample-0001_label.nii.gz")
    _empty_label(folder / "sample-0001_label.nii.gz")
    (synthetic,) = synthetic_cases(folder)
    assert case_problem(synthetic) is None
    assert "is empty" in case_problem(real)
