"""Robust aggregation: the weighted median and trimmed mean as defined, and the same global model after a round
with FULL and with DIFF transfer (NVFlare's controller adds a DIFF result to the global model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from dose3d_fl.fl.server.aggregators import (
    RobustAggregator,
    capped_weights,
    weighted_median,
    weighted_trimmed_mean,
)
from tests.fl.site_messages import tiny_model


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_with_equal_weights_the_weighted_median_is_the_median(n: int) -> None:
    stack = np.random.default_rng(n).normal(size=(n, 7, 3))
    assert np.allclose(weighted_median(stack), np.median(stack, axis=0))
    assert np.allclose(weighted_median(stack, np.full(n, 4.0)), np.median(stack, axis=0))


def test_weighted_median_is_the_midpoint_of_the_lower_and_upper_weighted_medians() -> None:
    values = np.array([[0.0], [1.0], [2.0]])
    # Weights 1, 1, 3 of 5: the value 2 holds more than half; lower and upper medians are both 2.
    assert weighted_median(values, np.array([1.0, 1.0, 3.0]))[0] == 2.0
    # Weights 1, 1, 2 of 4: cumulative weight reaches half at 1 from below and at 2 from above.
    assert weighted_median(values, np.array([1.0, 1.0, 2.0]))[0] == 1.5
    # The order of the sites does not matter.
    assert weighted_median(values[::-1], np.array([2.0, 1.0, 1.0]))[0] == 1.5


def test_weighted_trimmed_mean_cuts_by_rank_and_weights_the_rest() -> None:
    values = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # Equal weights, 0.2 of 5 sites: one site cut at each end.
    assert weighted_trimmed_mean(values, 0.2)[0] == pytest.approx(2.0)
    # The cut is by rank: the heavy site at the top end is cut like any other; 1, 2, 3 keep weights 1, 1, 2.
    weights = np.array([1.0, 1.0, 1.0, 2.0, 4.0])
    assert weighted_trimmed_mean(values, 0.2, weights)[0] == pytest.approx((1 + 2 + 2 * 3) / 4)
    # Fewer than one site's share: nothing cut, the weighted mean.
    assert weighted_trimmed_mean(values, 0.1, weights)[0] == pytest.approx((0 + 1 + 2 + 6 + 40) / 9)
    # At least one value is left.
    assert weighted_trimmed_mean(values[:2], 0.49)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        weighted_trimmed_mean(values, 0.5)


def test_a_site_cannot_weigh_more_than_the_median_site_by_claiming_more_steps() -> None:
    assert capped_weights([10, 12, 8, 10, 1e9]).tolist() == [10, 10, 8, 10, 10]
    values = np.array([[1.0], [1.1], [0.9], [1.0], [-100.0]])
    aggregator = RobustAggregator("median")
    for value, steps in zip(values, [10, 12, 8, 10, 1e9], strict=True):
        aggregator.accept_model(FLModel(params={"w": value}, meta={"NUM_STEPS_CURRENT_ROUND": steps}))
    assert aggregator.aggregate_model().params["w"][0] == pytest.approx(1.0)
    # Uncapped, the claim of 1e9 steps would carry the weighted median by itself.
    assert weighted_median(values, np.array([10, 12, 8, 10, 1e9]))[0] == -100.0


def _global_model() -> dict[str, torch.Tensor]:
    model = tiny_model()
    rng = np.random.default_rng(1)
    for name, value in model.items():
        if value.is_floating_point():
            value.copy_(torch.from_numpy(rng.normal(0, 0.1, value.shape).astype(np.float32)))
            if name.endswith("running_var"):
                value.abs_().add_(0.5)
        else:
            value.fill_(40)  # num_batches_tracked after some rounds
    return model


def _local_models(global_model: dict[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Four honest sites' local models and one that sends its update sign-flipped and x10."""
    rng = np.random.default_rng(2)
    steps = [4, 6, 8, 10, 6]
    locals_ = []
    for site, site_steps in enumerate(steps):
        local = {}
        for name, value in global_model.items():
            if not value.is_floating_point():
                local[name] = value + site_steps
                continue
            step = torch.from_numpy(rng.normal(0.01, 0.02, value.shape).astype(np.float32))
            if name.endswith("running_var"):
                step = -0.3 * torch.rand(value.shape, generator=torch.Generator().manual_seed(site))
            elif site == 4:
                step = -10 * step
            local[name] = value + step
        locals_.append(local)
    return locals_, steps


def _round(method: str, sent: list[dict], steps: list[int], params_type: ParamsType) -> FLModel:
    aggregator = RobustAggregator(method, trim_fraction=0.2)
    for site, (params, site_steps) in enumerate(zip(sent, steps, strict=True)):
        aggregator.accept_model(
            FLModel(
                params=params,
                params_type=params_type,
                metrics={"val_dice": 0.5 + 0.1 * site},
                meta={"NUM_STEPS_CURRENT_ROUND": site_steps, "client_name": f"site-{site + 1}"},
            )
        )
    return aggregator.aggregate_model()


@pytest.mark.parametrize("method", ["median", "trimmed_mean"])
def test_full_and_diff_transfer_give_the_same_global_model(method: str) -> None:
    """FULL: the result replaces the global model; DIFF: NVFlare's controller adds it to the global model
    (``FLModelUtils.update_model``, which ``BaseFedAvg.update_model`` calls). Both must be the robust
    combination of the sites' local models."""
    global_model = _global_model()
    locals_, steps = _local_models(global_model)
    diffs = [{k: local[k] - global_model[k] for k in local} for local in locals_]

    full = _round(method, locals_, steps, ParamsType.FULL)
    diff = _round(method, diffs, steps, ParamsType.DIFF)
    assert full.params_type == ParamsType.FULL and diff.params_type == ParamsType.DIFF

    def updated(result: FLModel) -> dict[str, torch.Tensor]:
        start = FLModel(params={k: v.clone() for k, v in global_model.items()}, params_type=ParamsType.FULL)
        return FLModelUtils.update_model(start, result).params

    after_full, after_diff = updated(full), updated(diff)
    assert set(after_full) == set(after_diff) == set(global_model)
    weights = capped_weights(steps)
    for name, value in after_full.items():
        assert value.dtype == global_model[name].dtype, name
        assert torch.allclose(value, after_diff[name], atol=1e-6), name
        stack = np.stack([local[name].numpy() for local in locals_]).astype(np.float64)
        if method == "median":
            expected = weighted_median(stack, weights)
        else:
            expected = weighted_trimmed_mean(stack, 0.2, weights)
        if value.is_floating_point():
            assert np.allclose(value.numpy(), expected, atol=1e-6), name
            honest = stack[:4]
            # The sign-flipped site does not pull any coordinate outside the honest sites' range.
            assert np.all(value.numpy() >= honest.min(axis=0) - 1e-6), name
            assert np.all(value.numpy() <= honest.max(axis=0) + 1e-6), name
        else:  # num_batches_tracked: an integer, in both transfer types
            assert value.item() == round(float(expected)) == after_diff[name].item()
    assert all(bool((after_diff[name] >= 0).all()) for name in after_diff if name.endswith("running_var"))


def test_metrics_are_averaged_with_the_capped_weights_and_each_site_is_listed() -> None:
    global_model = _global_model()
    locals_, steps = _local_models(global_model)
    result = _round("median", locals_, steps, ParamsType.FULL)
    weights = capped_weights(steps)  # 4, 6, 6, 6, 6
    expected = sum(w * (0.5 + 0.1 * i) for i, w in enumerate(weights)) / weights.sum()
    assert result.metrics["val_dice"] == pytest.approx(expected)
    info = result.meta[AppConstants.METRICS_AGGREGATION_INFO]
    assert info["use_contribution_sites"] is True
    assert [(s["name"], s["weight"]) for s in info["site_weights"]] == [
        (f"site-{i + 1}", float(w)) for i, w in enumerate(weights)
    ]


def test_unweighted_aggregation_gives_every_site_the_same_weight() -> None:
    aggregator = RobustAggregator("median", weighted=False)
    for value, steps in ((0.0, 1), (1.0, 1), (2.0, 100), (3.0, 100)):
        aggregator.accept_model(
            FLModel(params={"w": np.array([value])}, meta={"NUM_STEPS_CURRENT_ROUND": steps})
        )
    assert aggregator.aggregate_model().params["w"][0] == pytest.approx(1.5)


def test_a_round_that_mixes_full_and_diff_results_is_refused() -> None:
    aggregator = RobustAggregator("median")
    aggregator.accept_model(FLModel(params={"w": np.zeros(2)}, params_type=ParamsType.FULL))
    with pytest.raises(RuntimeError, match="FULL or DIFF for every site"):
        aggregator.accept_model(FLModel(params={"w": np.zeros(2)}, params_type=ParamsType.DIFF))
    with pytest.raises(ValueError, match="not one of"):
        RobustAggregator("mean")
