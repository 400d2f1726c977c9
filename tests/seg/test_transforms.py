"""Preprocessing and augmentation: shapes, intensity ranges, RAS orientation, caching boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, Randomizable

from dose3d_fl.seg.transforms import (
    BG_INDICES,
    FG_INDICES,
    augmentation_transforms,
    crop_index_transforms,
    eval_transforms,
    preprocessing_transforms,
    train_transforms,
)
from tests.seg.cases import SHAPE, TINY_PROFILE, write_case


def test_preprocessing_gives_windowed_ras_volumes_at_least_one_roi_large(tmp_path):
    case = write_case(tmp_path, "hfs", seed=1)
    out = eval_transforms(TINY_PROFILE)(case)
    image, label = out["image"], out["label"]
    assert image.shape == label.shape
    assert image.shape[0] == 1
    assert all(n >= r for n, r in zip(image.shape[1:], TINY_PROFILE.roi_size, strict=True))
    assert all(n <= s for n, s in zip(image.shape[1:], SHAPE, strict=True))  # cropped to the body
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    np.testing.assert_allclose(np.abs(np.diag(image.affine.numpy())[:3]), TINY_PROFILE.pixdim)
    assert np.all(np.diag(image.affine.numpy())[:3] > 0)  # RAS


def test_feet_first_case_matches_head_first_and_keeps_the_spleen_on_the_left(tmp_path):
    # Site-3 stores its feet-first scans with voxels running right, posterior, inferior (RPI).
    hfs = eval_transforms(TINY_PROFILE)(write_case(tmp_path / "hfs", "case", seed=2, axcodes=("L", "P", "S")))
    ffs = eval_transforms(TINY_PROFILE)(write_case(tmp_path / "ffs", "case", seed=2, axcodes=("R", "P", "I")))
    np.testing.assert_array_equal(ffs["label"].numpy(), hfs["label"].numpy())
    np.testing.assert_allclose(ffs["image"].numpy(), hfs["image"].numpy())
    # In RAS voxel order the first axis runs towards the patient's right: the spleen lies in the low half.
    organ_x = np.argwhere(ffs["label"][0].numpy() > 0)[:, 0]
    assert organ_x.mean() < ffs["label"].shape[1] / 2


def test_training_transforms_give_num_samples_roi_crops(tmp_path):
    case = write_case(tmp_path, "case", seed=3)
    transform = train_transforms(TINY_PROFILE)
    transform.set_random_state(seed=0)
    crops = transform(case)
    assert len(crops) == TINY_PROFILE.num_samples
    for crop in crops:
        assert crop["image"].shape == crop["label"].shape == (1, *TINY_PROFILE.roi_size)


def test_cached_crop_indices_give_the_same_crops_and_stay_out_of_the_batch(tmp_path):
    """The indices are computed once with the cached volumes; the crops drawn from them are the same."""
    case = write_case(tmp_path, "case", seed=3)
    with_indices, without = (TINY_PROFILE.replace(cache_crop_indices=flag) for flag in (True, False))
    assert crop_index_transforms(without) == []
    assert not any(isinstance(t, Randomizable) for t in crop_index_transforms(with_indices))
    cached = Compose([*preprocessing_transforms(with_indices), *crop_index_transforms(with_indices)])(case)
    assert cached[FG_INDICES].numel() == int((cached["label"] > 0).sum())
    assert 0 < cached[BG_INDICES].numel() < cached["label"].numel()
    crops = {}
    for profile in (with_indices, without):
        transform = train_transforms(profile)
        transform.set_random_state(seed=0)
        crops[profile.cache_crop_indices] = transform(case)
    for a, b in zip(crops[True], crops[False], strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert FG_INDICES not in a and BG_INDICES not in a


def test_small_volumes_are_padded_to_the_roi(tmp_path):
    case = write_case(tmp_path, "case", seed=4)
    large_roi = TINY_PROFILE.replace(roi_size=(32, 32, 32))
    out = eval_transforms(large_roi)(case)
    assert tuple(out["image"].shape[1:]) == (32, 32, 32)


def test_deterministic_and_random_parts_are_separate():
    assert not any(isinstance(t, Randomizable) for t in preprocessing_transforms(TINY_PROFILE))
    assert all(isinstance(t, Randomizable) for t in augmentation_transforms(TINY_PROFILE))


@pytest.mark.parametrize("axes", [(1,), (1, 2)])
def test_allowed_flips_never_touch_left_right(axes):
    flips = [
        t for t in augmentation_transforms(TINY_PROFILE.replace(flip_axes=axes)) if "Flip" in type(t).__name__
    ]
    assert [t.flipper.spatial_axis for t in flips] == list(axes)


def test_inference_transforms_need_no_label(tmp_path):
    case = write_case(tmp_path, "case", seed=5)
    out = eval_transforms(TINY_PROFILE, with_label=False)({"image": case["image"]})
    assert "label" not in out
    assert out["image"].shape[0] == 1
