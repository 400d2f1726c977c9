"""The best-HU-interval baseline."""

from __future__ import annotations

import pytest

from dose3d_fl.seg.baseline import hu_threshold_baseline
from tests.seg.cases import write_case


def test_baseline_finds_the_organs_hu_interval_when_hu_alone_separates_it(tmp_path):
    # The tiny phantom's organ (+100 HU) is the only tissue in its HU range: a threshold works here, unlike
    # on the synthetic abdomen where the spleen's neighbours share its density.
    train = [write_case(tmp_path, f"t{i}", seed=i) for i in range(3)]
    val = [write_case(tmp_path, f"v{i}", seed=10 + i) for i in range(2)]
    result = hu_threshold_baseline(train, val)
    assert 30 <= result["hu_min"] <= 70 and 130 <= result["hu_max"] <= 170
    assert result["train_dice"] > 0.9 and result["val_dice"] > 0.9


def test_baseline_needs_cases():
    with pytest.raises(ValueError, match="training and validation"):
        hu_threshold_baseline([], [])
