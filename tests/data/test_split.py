"""The fixed per-site train/validation split stored beside the cache."""

from __future__ import annotations

import json

import pytest

from dose3d_fl.data.manifest import Manifest
from dose3d_fl.data.split import SPLIT_NAME, draw_split, load_or_create_split, split_cases
from tests.seg.cases import write_cache


@pytest.mark.parametrize(("n_cases", "n_val"), [(2, 1), (5, 1), (8, 2), (12, 3)])
def test_split_sizes(n_cases, n_val):
    split = draw_split([f"c{i}" for i in range(n_cases)])
    assert len(split.val) == n_val
    assert sorted(split.train + split.val) == sorted(f"c{i}" for i in range(n_cases))


def test_split_is_written_once_and_reused(tmp_path):
    cache = write_cache(tmp_path / "site", 8)
    first = load_or_create_split(cache, seed=0)
    written = (cache / SPLIT_NAME).read_text()
    # A re-run, even with another seed or fraction, keeps the stored split.
    again = load_or_create_split(cache, val_fraction=0.5, seed=123)
    assert again == first
    assert (cache / SPLIT_NAME).read_text() == written
    assert json.loads(written)["val"] == first.val


def test_split_is_deterministic_for_a_seed(tmp_path):
    ids = [f"case-{i}" for i in range(12)]
    assert draw_split(ids, seed=3) == draw_split(list(reversed(ids)), seed=3)
    assert draw_split(ids, seed=3).val != draw_split(ids, seed=4).val


def test_new_and_removed_cases_leave_other_assignments_alone(tmp_path):
    cache = write_cache(tmp_path / "site", 8)
    first = load_or_create_split(cache)
    manifest = Manifest.load(cache)
    removed = first.train[0]
    manifest.cases = [case for case in manifest.cases if case.id != removed]
    extra = write_cache(tmp_path / "more", 3, seed=9)
    for case in Manifest.load(extra).cases:
        case.image, case.label = f"../more/{case.image}", f"../more/{case.label}"
        manifest.cases.append(case)
    manifest.save(cache)

    updated = load_or_create_split(cache)
    assert removed not in updated.train + updated.val
    assert set(first.val) <= set(updated.val)
    assert set(first.train) - {removed} <= set(updated.train)
    assert len(updated.train) + len(updated.val) == 10
    assert load_or_create_split(cache) == updated


def test_split_cases_are_absolute_paths_of_the_cache(tmp_path):
    cache = write_cache(tmp_path / "site", 4)
    train, val = split_cases(cache, load_or_create_split(cache))
    assert len(train) == 3 and len(val) == 1
    for case in train + val:
        assert set(case) == {"id", "image", "label"}
        assert case["image"].startswith(str(cache.resolve()))


def test_a_single_case_cannot_be_split(tmp_path):
    cache = write_cache(tmp_path / "site", 1)
    with pytest.raises(ValueError, match="at least 2 cases"):
        load_or_create_split(cache)
