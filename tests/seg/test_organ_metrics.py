"""Per-organ Dice, HD95 and surface Dice: hand-computable cases, unlabelled and missed organs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.networks.utils import one_hot

from dose3d_fl.seg.organ_metrics import DEFAULT_TOLERANCE_MM, OrganMetrics, score_organs

ORGANS = ("Spleen", "Liver")


def _volume(batch: int = 1, size: int = 12) -> torch.Tensor:
    return torch.zeros(batch, 1, size, size, size)


def test_a_box_shifted_by_one_voxel() -> None:
    # A 4^3 box and the same box one voxel higher: 48 of 64 voxels shared, Dice 2*48/128 = 0.75. Of each box's
    # 56 surface voxels, 36 lie on the other's surface and 20 one voxel (2 mm) from it: HD95 = 2 mm, surface
    # Dice (36 + 36) / 112 below a 2 mm tolerance and 1 from 2 mm on.
    label, prediction = _volume(), _volume()
    label[0, 0, 2:6, 2:6, 2:6] = 1
    prediction[0, 0, 2:6, 2:6, 3:7] = 1
    for tolerance, surface in ((1.9, 72 / 112), (2.0, 1.0)):
        scores = score_organs(prediction, label, ORGANS[:1], (2.0, 2.0, 2.0), tolerance_mm=tolerance)
        assert scores.dice[0, 0] == pytest.approx(0.75)
        assert scores.hd95[0, 0] == pytest.approx(2.0)
        assert scores.surface_dice[0, 0] == pytest.approx(surface, abs=1e-6)
        assert scores.tolerance_mm == tolerance


def test_two_single_voxels_apart_use_the_spacing() -> None:
    # Three slices apart at 2.5 mm: every distance is 7.5 mm.
    label, prediction = _volume(), _volume()
    label[0, 0, 2, 2, 2] = 1
    prediction[0, 0, 2, 2, 5] = 1
    spacing = (0.8, 0.8, 2.5)
    scores = score_organs(prediction, label, ORGANS[:1], spacing, tolerance_mm=7.4)
    assert (scores.dice[0, 0], scores.hd95[0, 0], scores.surface_dice[0, 0]) == (0.0, pytest.approx(7.5), 0.0)
    assert score_organs(prediction, label, ORGANS[:1], spacing, tolerance_mm=7.5).surface_dice[0, 0] == 1.0


def test_a_perfect_prediction_and_one_hot_input() -> None:
    label = _volume()
    label[0, 0, 1:5, 1:6, 2:8] = 1
    label[0, 0, 7:10, 7:10, 7:10] = 2
    scores = score_organs(label.clone(), label, ORGANS, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(scores.dice, [[1.0, 1.0]])
    np.testing.assert_array_equal(scores.hd95, [[0.0, 0.0]])
    np.testing.assert_array_equal(scores.surface_dice, [[1.0, 1.0]])
    as_one_hot = one_hot(label.long(), num_classes=3, dim=1)
    again = score_organs(as_one_hot, label, ORGANS, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(again.dice, scores.dice)


def test_unlabelled_organs_are_nan_and_left_out_of_the_means() -> None:
    label, prediction = _volume(batch=2), _volume(batch=2)
    label[:, 0, 2:6, 2:6, 2:6] = 1
    prediction[:, 0, 2:6, 2:6, 3:7] = 1
    label[:, 0, 8:11, 8:11, 8:11] = 2
    prediction[0, 0, 8:11, 8:11, 8:11] = 2  # case 0 finds the liver, case 1 predicts the liver nowhere...
    prediction[1, 0, 0:3, 0:3, 0:3] = 2  # ...but somewhere else entirely
    labelled = [[True, True], [True, False]]  # ...and case 1 does not delineate the liver
    scores = score_organs(prediction, label, ORGANS, (2.0, 2.0, 2.0), labelled=labelled)
    assert (
        math.isnan(scores.dice[1, 1])
        and math.isnan(scores.hd95[1, 1])
        and math.isnan(scores.surface_dice[1, 1])
    )
    metrics = OrganMetrics(ORGANS)
    metrics.add(scores, ["a", "b"])
    summary = metrics.summary()
    assert summary["Liver"] == {"dice": 1.0, "hd95": 0.0, "surface_dice": 1.0, "cases": 1, "missed": 0}
    assert summary["Spleen"]["dice"] == pytest.approx(0.75) and summary["Spleen"]["cases"] == 2
    assert metrics.mean_dice() == pytest.approx((0.75 + 1.0) / 2)
    assert metrics.tolerance_mm == DEFAULT_TOLERANCE_MM


def test_a_missed_organ_counts_and_is_never_hidden() -> None:
    label, prediction = _volume(batch=2), _volume(batch=2)
    label[:, 0, 2:6, 2:6, 2:6] = 1
    prediction[0, 0, 2:6, 2:6, 2:6] = 1  # case 1 predicts nothing
    scores = score_organs(prediction, label, ORGANS[:1], (1.0, 1.0, 1.0))
    assert (scores.dice[1, 0], scores.hd95[1, 0], scores.surface_dice[1, 0]) == (0.0, math.inf, 0.0)
    metrics = OrganMetrics(ORGANS[:1])
    metrics.add(scores, ["found", "missed"])
    summary = metrics.summary()["Spleen"]
    assert summary == {"dice": 0.5, "hd95": 0.0, "surface_dice": 0.5, "cases": 2, "missed": 1}
    written = json.loads(json.dumps(metrics.to_json(), allow_nan=False))
    assert written["cases"]["missed"]["Spleen"] == {"dice": 0.0, "hd95": None, "surface_dice": 0.0}
    assert written["organs"]["Spleen"]["missed"] == 1 and written["tolerance_mm"] == DEFAULT_TOLERANCE_MM


def test_an_organ_absent_from_the_reference_is_not_scored() -> None:
    label, prediction = _volume(), _volume()
    label[0, 0, 2:6, 2:6, 2:6] = 1
    prediction[0, 0, 2:6, 2:6, 2:6] = 1
    prediction[0, 0, 8:10, 8:10, 8:10] = 2  # a liver where the reference (a crop) has none
    scores = score_organs(prediction, label, ORGANS, (1.0, 1.0, 1.0))
    assert scores.dice[0, 0] == 1.0 and math.isnan(scores.dice[0, 1]) and math.isnan(scores.hd95[0, 1])


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"spacing": (1.0, 1.0)}, "spacing .* 2 values for 3 spatial axes"),
        ({"labelled": [[True]]}, r"labelled has shape \(1, 1\); expected \(batch, organs\) = \(1, 2\)"),
        ({"prediction": torch.full((1, 1, 4, 4, 4), 3.0)}, "prediction values must be 0..2; found 3..3"),
        ({"prediction": torch.zeros(1, 2, 4, 4, 4)}, "prediction has 2 channels; expected 1"),
        ({"prediction": torch.zeros(1, 1, 4, 4, 5)}, "differ in shape"),
    ],
)
def test_inputs_that_do_not_fit_are_refused(kwargs: dict, reason: str) -> None:
    arguments = {"prediction": torch.zeros(1, 1, 4, 4, 4), "label": torch.zeros(1, 1, 4, 4, 4)}
    arguments.update({"organs": ORGANS, "spacing": (1.0, 1.0, 1.0)}, **kwargs)
    with pytest.raises(ValueError, match=reason):
        score_organs(**arguments)


def test_scores_must_fit_the_accumulator() -> None:
    label = _volume()
    label[0, 0, 2:4, 2:4, 2:4] = 1
    scores = score_organs(label, label, ORGANS[:1], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="do not fit"):
        OrganMetrics(ORGANS).add(scores, ["a"])
    with pytest.raises(ValueError, match="2 case ids for 1"):
        OrganMetrics(ORGANS[:1]).add(scores, ["a", "b"])


def test_dice_alone_skips_the_distances_and_still_counts_a_miss() -> None:
    """``distances=False`` (a federated site's training rounds): the same Dice, HD95 and surface Dice NaN, and
    a missed organ still HD95 ``inf`` so that ``summary()`` counts it."""
    label, prediction = _volume(), _volume()
    label[0, 0, 2:6, 2:6, 2:6] = 1
    prediction[0, 0, 2:6, 2:6, 3:7] = 1
    label[0, 0, 8:10, 8:10, 8:10] = 2  # the liver, not predicted
    full = score_organs(prediction, label, ORGANS, (2.0, 2.0, 2.0))
    quick = score_organs(prediction, label, ORGANS, (2.0, 2.0, 2.0), distances=False)
    np.testing.assert_array_equal(quick.dice, full.dice)
    assert math.isnan(quick.hd95[0, 0]) and math.isnan(quick.surface_dice[0, 0])
    assert quick.hd95[0, 1] == math.inf and math.isnan(quick.surface_dice[0, 1])
    metrics = OrganMetrics(ORGANS)
    metrics.add(quick, ["case"])
    assert metrics.summary()["Liver"]["missed"] == 1 and math.isnan(metrics.summary()["Spleen"]["hd95"])
