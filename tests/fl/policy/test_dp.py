"""Site-enforced differential privacy: the Gaussian mechanism on the update a site releases, for FULL and DIFF
transfer and with float16 after it; the accountant agrees with the stated sensitivity; the ledger halts before
the budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from dose3d_fl.fl.policy.dp import (
    RDP_ORDERS,
    GaussianDP,
    PrivacyLedger,
    Release,
    clip_and_noise,
    noise_std,
    sensitivity,
)
from dose3d_fl.fl.policy.filters import WeightsOnlyGuard
from dose3d_fl.fl.policy.quantization import META_KEY, Float16Dequantizer, Float16Quantizer
from tests.fl.site_messages import IN, OUT, context, task_data, tiny_model, train_result


def test_clipping_bounds_the_update_norm_to_c() -> None:
    rng = np.random.default_rng(0)
    update = {"a": rng.normal(size=(50, 40)), "b": rng.normal(size=300)}
    noised, norm = clip_and_noise(update, clip_norm=2.0, noise_multiplier=0.0, rng=rng)
    assert norm > 2.0
    clipped = np.sqrt(sum(np.sum(v**2) for v in noised.values()))
    assert clipped == pytest.approx(2.0)
    # direction is kept
    assert np.allclose(noised["a"] / np.linalg.norm(noised["a"]), update["a"] / np.linalg.norm(update["a"]))
    small = {"a": update["a"] * 1e-3}
    kept, _ = clip_and_noise(small, clip_norm=2.0, noise_multiplier=0.0, rng=rng)
    assert np.allclose(kept["a"], small["a"])  # under the bound: unchanged


def test_noise_standard_deviation_is_sigma_times_the_replace_one_sensitivity_2c() -> None:
    assert sensitivity(3.0) == 6.0 and noise_std(3.0, 0.5) == 3.0
    zeros = {"w": np.zeros(200_000)}
    noised, _ = clip_and_noise(zeros, clip_norm=3.0, noise_multiplier=0.5, rng=np.random.default_rng(1))
    assert noised["w"].mean() == pytest.approx(0.0, abs=0.02)
    assert noised["w"].std() == pytest.approx(0.5 * 2 * 3.0, rel=0.01)


def test_the_accountant_charges_noise_std_over_sensitivity() -> None:
    """One release of std ``2 sigma C`` is the Gaussian mechanism with multiplier sigma: RDP alpha / (2 sigma^2)
    (Mironov 2017), converted as opacus does (Balle et al. 2020)."""
    sigma, clip, delta = 1.3, 5.0, 1e-5
    ledger = PrivacyLedger(Path("/nonexistent/ledger.json"))
    ledger.releases = [Release("j", 0, sigma, clip, 1.0, 0.0, noise_std=noise_std(clip, sigma))]
    assert ledger.releases[0].accounted_multiplier == pytest.approx(sigma)

    def conversion(order: float) -> float:
        rdp = order / (2 * sigma**2)
        return rdp - (math.log(delta) + math.log(order)) / (order - 1) + math.log((order - 1) / order)

    assert ledger.epsilon(delta) == pytest.approx(min(conversion(a) for a in RDP_ORDERS), rel=1e-9)
    # A release recorded before the sensitivity was stated as 2C had sigma * C of noise: charged at sigma / 2.
    legacy = Release("j", 0, sigma, clip, 1.0, 0.0)
    assert legacy.accounted_multiplier == pytest.approx(sigma / 2)


def _direction(model: dict[str, torch.Tensor], norm: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random update of the model's floating tensors with L2 norm ``norm`` (integer buffers: zero)."""
    rng = np.random.default_rng(seed)
    floats = {k: rng.normal(size=tuple(v.shape)) for k, v in model.items() if v.is_floating_point()}
    total = np.sqrt(sum(np.sum(d**2) for d in floats.values()))
    return {
        k: torch.from_numpy(floats[k] * norm / total).to(v.dtype) if k in floats else torch.zeros_like(v)
        for k, v in model.items()
    }


def _diff_result(diff: dict[str, torch.Tensor]):
    """A DIFF train result, as NVFlare's Client API sends it with ``params_transfer_type=DIFF``."""
    model = FLModel(
        params=diff,
        params_type=ParamsType.DIFF,
        metrics={"val_dice": 0.5},
        meta={"NUM_STEPS_CURRENT_ROUND": 10},
        current_round=0,
    )
    return FLModelUtils.to_shareable(model)


def _norm(tensors: dict[str, torch.Tensor], minus: dict[str, torch.Tensor] | None = None) -> float:
    names = [k for k, v in tensors.items() if v.is_floating_point()]
    return math.sqrt(
        sum(float(torch.sum((tensors[k].double() - (minus[k].double() if minus else 0)) ** 2)) for k in names)
    )


def _dp(tmp_path: Path, clip: float = 1.0, sigma: float = 1e-6, budget: float = 1e30) -> GaussianDP:
    return GaussianDP(clip, sigma, budget, ledger=str(tmp_path / "ledger.json"), seed=0)


def _release(dp: GaussianDP, received: dict, result, job_id: str = "job-dp", round_: int = 0):
    dp_in = GaussianDP(dp.clip_norm, dp.noise_multiplier, dp.epsilon_budget, dp.delta, dp.ledger)
    dp_in.process(task_data(received, round_), context(IN, "train", job_id))
    return dp.process(result, context(OUT, "train", job_id))


@pytest.mark.parametrize("true_norm", [0.044, 3.0], ids=["below C", "above C"])
def test_diff_transfer_releases_the_clipped_difference_as_a_difference(
    tmp_path: Path, true_norm: float
) -> None:
    """The issue's case: a true update of norm 0.044 (below C = 1) used to leave with norm 5.52."""
    received = tiny_model()
    out = _release(_dp(tmp_path), received, _diff_result(_direction(received, true_norm)))

    dxo = from_shareable(out)
    assert dxo.data_kind == DataKind.WEIGHT_DIFF  # still a difference
    assert _norm(dxo.data) == pytest.approx(min(true_norm, 1.0), abs=1e-3)  # below C: kept; above: C
    assert all(dxo.data[k].dtype == v.dtype for k, v in received.items())
    ints = [k for k, v in received.items() if not v.is_floating_point()]
    assert ints and all(not torch.any(dxo.data[k]) for k in ints)  # batch counters: no change
    (release,) = PrivacyLedger(tmp_path / "ledger.json").releases
    assert release.update_norm == pytest.approx(true_norm, rel=1e-4) and release.transfer == "diff"


@pytest.mark.parametrize("true_norm", [0.044, 3.0], ids=["below C", "above C"])
def test_full_transfer_releases_the_global_model_plus_the_clipped_update(
    tmp_path: Path, true_norm: float
) -> None:
    received = tiny_model()
    update = _direction(received, true_norm)
    trained = {k: v + update[k] if v.is_floating_point() else v + 7 for k, v in received.items()}
    out = _release(_dp(tmp_path), received, train_result(trained))

    dxo = from_shareable(out)
    assert dxo.data_kind == DataKind.WEIGHTS
    assert _norm(dxo.data, minus=received) == pytest.approx(min(true_norm, 1.0), abs=1e-3)
    ints = [k for k, v in received.items() if not v.is_floating_point()]
    assert ints and all(torch.equal(dxo.data[k], received[k]) for k in ints)  # batch counters: as received
    metrics = dxo.get_meta_prop("initial_metrics")
    assert metrics["dp_epsilon"] == pytest.approx(dxo.get_meta_prop("dp_epsilon"))
    assert metrics["dp_epsilon"] > 0
    (release,) = PrivacyLedger(tmp_path / "ledger.json").releases
    assert release.update_norm == pytest.approx(true_norm, rel=1e-4) and release.transfer == "full"
    assert release.noise_std == pytest.approx(2e-6)


def test_noise_on_a_diff_release_has_std_2_sigma_c(tmp_path: Path) -> None:
    received = tiny_model()
    dp = _dp(tmp_path, clip=0.5, sigma=0.2)
    out = from_shareable(_release(dp, received, _diff_result(_direction(received, 0.0))))
    noise = np.concatenate(
        [v.numpy().ravel() for k, v in out.data.items() if v.is_floating_point() and "running_var" not in k]
    )
    assert noise.size > 1000 and noise.std() == pytest.approx(0.2 * 2 * 0.5, rel=0.05)


@pytest.mark.parametrize("transfer", ["full", "diff"])
def test_float16_runs_after_dp_which_sees_float32(tmp_path: Path, transfer: str) -> None:
    """The job's float16 filters wrap the site's: the global model arrives as float16 and is restored after
    the site's filters have remembered it; the result leaves DP as float32 and only then becomes float16."""
    global_model = tiny_model()
    job, dp = "job-fp16", _dp(tmp_path, clip=1.0, sigma=1e-6)
    # Server side: the global model is sent as float16. Site side: site filters first, then the job's.
    incoming = Float16Quantizer().process(task_data(global_model), context(OUT, "train", job))
    for data_filter in (
        WeightsOnlyGuard(),
        GaussianDP(1.0, 1e-6, 1e30, ledger=dp.ledger),
        Float16Dequantizer(),
    ):
        incoming = data_filter.process(incoming, context(IN, "train", job))
    as_received = from_shareable(incoming).data  # what the client script loads: float32 of float16 values
    assert all(as_received[k].dtype == v.dtype for k, v in global_model.items())

    update = _direction(global_model, 0.5)
    if transfer == "full":
        result = train_result({k: v + update[k] for k, v in as_received.items()})
    else:
        result = _diff_result(update)
    released = dp.process(result, context(OUT, "train", job))
    floats = [k for k, v in global_model.items() if v.is_floating_point()]
    assert all(from_shareable(released).data[k].dtype == torch.float32 for k in floats)  # DP's output
    sent = from_shareable(Float16Quantizer().process(released, context(OUT, "train", job)))
    assert all(sent.data[k].dtype == torch.float16 for k in floats)
    assert set(sent.get_meta_prop(META_KEY).values()) == {"float32"}

    arrived = from_shareable(Float16Dequantizer().process(sent.to_shareable(), context(IN, "train", job)))
    reference = as_received if transfer == "full" else None
    assert _norm(arrived.data, minus=reference) == pytest.approx(0.5, abs=1e-2)  # float16 of the release
    (release,) = PrivacyLedger(Path(dp.ledger)).releases
    assert release.update_norm == pytest.approx(0.5, rel=1e-4)  # the true update, not a float16 artefact


def test_filter_refuses_before_the_release_that_would_exceed_the_budget(tmp_path: Path, caplog) -> None:
    ledger = tmp_path / "ledger.json"
    # A budget between the epsilon of 2 and of 3 releases at sigma 1: exactly 2 releases fit.
    eps2, eps3 = _epsilon_of(tmp_path, 2), _epsilon_of(tmp_path, 3)
    assert eps2 < eps3
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=1.0, epsilon_budget=(eps2 + eps3) / 2, ledger=str(ledger))
    model = tiny_model()
    codes = [
        _release(dp, model, train_result(model), round_=r).get_return_code(ReturnCode.OK) for r in range(4)
    ]

    assert codes == [
        ReturnCode.OK,
        ReturnCode.OK,
        ReturnCode.TASK_RESULT_FILTER_ERROR,
        ReturnCode.TASK_RESULT_FILTER_ERROR,
    ]
    spent = PrivacyLedger(ledger)
    assert len(spent.releases) == 2 and spent.epsilon(1e-5) <= dp.epsilon_budget  # never beyond the budget
    assert "privacy budget reached" in caplog.text and "sends no more updates" in caplog.text


def _epsilon_of(tmp_path: Path, releases: int) -> float:
    ledger = PrivacyLedger(tmp_path / "scratch.json")
    ledger.releases = [Release("j", r, 1.0, 1.0, 1.0, 0.0, noise_std=2.0) for r in range(releases)]
    return ledger.epsilon(1e-5)


def test_ledger_composes_across_jobs_and_a_site_named_ledger(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledgers" / "{site}.json")
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=1.0, epsilon_budget=1e9, ledger=ledger)
    model = tiny_model()
    _release(dp, model, train_result(model), job_id="job-a")
    path = tmp_path / "ledgers" / "site-1.json"  # {site}: the site's name
    first = PrivacyLedger(path).epsilon(1e-5)
    _release(dp, model, train_result(model), job_id="job-b")
    assert PrivacyLedger(path).epsilon(1e-5) > first
    assert [r.job_id for r in PrivacyLedger(path).releases] == ["job-a", "job-b"]
    assert json.loads(path.read_text())["releases"][0]["noise_std"] == 2.0


@pytest.mark.parametrize("transfer", ["full", "diff"])
def test_submit_model_gets_the_last_released_model_as_full_weights(tmp_path: Path, transfer: str) -> None:
    dp = _dp(tmp_path, clip=1.0, sigma=0.1)
    model = tiny_model()
    update = _direction(model, 0.3)
    if transfer == "full":
        result = train_result({k: v + update[k] for k, v in model.items()})
    else:
        result = _diff_result(update)
    sent = from_shareable(_release(dp, model, result)).data
    released = {k: model[k] + sent[k] for k in model} if transfer == "diff" else sent
    local = train_result({k: v * 3 for k, v in model.items()}, metrics=None)
    out = from_shareable(dp.process(local, context(OUT, "submit_model", "job-dp")))
    assert out.data_kind == DataKind.WEIGHTS
    floats = [k for k, v in model.items() if v.is_floating_point()]
    assert all(torch.allclose(out.data[k], released[k], atol=1e-6) for k in floats)


def test_a_non_finite_update_is_refused_and_not_recorded(tmp_path: Path) -> None:
    model = tiny_model()
    broken = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in model.items()}
    out = _release(_dp(tmp_path), model, train_result(broken))
    assert out.get_return_code() == ReturnCode.TASK_RESULT_FILTER_ERROR
    assert not (tmp_path / "ledger.json").exists()


def test_invalid_settings_name_the_file_to_fix() -> None:
    with pytest.raises(ValueError, match=r"privacy.json"):
        GaussianDP(clip_norm=0, noise_multiplier=1.0, epsilon_budget=1.0)


def test_a_fixed_seed_still_gives_each_site_its_own_noise(tmp_path: Path) -> None:
    model = tiny_model()

    def noise(site: str) -> torch.Tensor:
        dp = GaussianDP(1.0, 0.1, 1e30, ledger=str(tmp_path / f"{site}.json"), seed=7)
        GaussianDP(1.0, 0.1, 1e30).process(task_data(model), context(IN, "train", f"job-{site}", site))
        out = dp.process(_diff_result(_direction(model, 0.0)), context(OUT, "train", f"job-{site}", site))
        return next(v for v in from_shareable(out).data.values() if v.is_floating_point())

    assert torch.equal(noise("site-1"), noise("site-1"))  # reproducible for one site
    assert not torch.equal(noise("site-1"), noise("site-2"))  # independent between sites
