"""Site-enforced differential privacy: the Gaussian mechanism follows C and sigma, the ledger halts at budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import from_shareable
from nvflare.apis.fl_constant import ReturnCode

from dose3d_fl.fl.policy.dp import GaussianDP, PrivacyLedger, Release, clip_and_noise
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


def test_noise_standard_deviation_is_sigma_times_c() -> None:
    zeros = {"w": np.zeros(200_000)}
    noised, _ = clip_and_noise(zeros, clip_norm=3.0, noise_multiplier=0.5, rng=np.random.default_rng(1))
    assert noised["w"].mean() == pytest.approx(0.0, abs=0.01)
    assert noised["w"].std() == pytest.approx(1.5, rel=0.01)


def _release(dp: GaussianDP, received: dict, trained: dict, job_id: str = "job-dp", round_: int = 0):
    dp_in = GaussianDP(dp.clip_norm, dp.noise_multiplier, dp.epsilon_budget, dp.delta, dp.ledger)
    dp_in.process(task_data(received, round_), context(IN, "train", job_id))
    return dp.process(train_result(trained), context(OUT, "train", job_id))


def test_filter_sends_global_plus_clipped_noised_update_and_accounts(tmp_path: Path) -> None:
    received = tiny_model()
    trained = {k: v + 1.0 if v.is_floating_point() else v + 7 for k, v in received.items()}
    ledger = tmp_path / "ledger.json"
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=1e-6, epsilon_budget=1e30, ledger=str(ledger), seed=0)

    out = _release(dp, received, trained)

    dxo = from_shareable(out)
    sent = dxo.data
    floats = [k for k, v in received.items() if v.is_floating_point() and not k.endswith("running_var")]
    diff = np.sqrt(sum(float(torch.sum((sent[k].double() - received[k].double()) ** 2)) for k in floats))
    assert diff <= 1.0 + 1e-3  # the update left clipped to C (plus negligible noise)
    ints = [k for k, v in received.items() if not v.is_floating_point()]
    assert ints and all(torch.equal(sent[k], received[k]) for k in ints)  # batch counters: as received
    metrics = dxo.get_meta_prop("initial_metrics")
    assert (
        metrics["dp_epsilon"] == pytest.approx(dxo.get_meta_prop("dp_epsilon")) and metrics["dp_epsilon"] > 0
    )
    assert len(json.loads(ledger.read_text())["releases"]) == 1


def test_filter_refuses_once_the_next_release_would_exceed_the_budget(tmp_path: Path, caplog) -> None:
    ledger = tmp_path / "ledger.json"
    # A budget between the epsilon of 2 and of 3 releases at sigma 1: exactly 2 releases fit.
    eps2, eps3 = _epsilon_of(ledger, 2), _epsilon_of(ledger, 3)
    assert eps2 < eps3
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=1.0, epsilon_budget=(eps2 + eps3) / 2, ledger=str(ledger))
    model = tiny_model()
    codes = [_release(dp, model, model, round_=r).get_return_code(ReturnCode.OK) for r in range(4)]

    assert codes == [
        ReturnCode.OK,
        ReturnCode.OK,
        ReturnCode.TASK_RESULT_FILTER_ERROR,
        ReturnCode.TASK_RESULT_FILTER_ERROR,
    ]
    assert len(PrivacyLedger(ledger).releases) == 2
    assert "privacy budget reached" in caplog.text


def _epsilon_of(path: Path, releases: int) -> float:
    ledger = PrivacyLedger(path.with_name("scratch.json"))
    ledger.releases = [Release("j", r, 1.0, 1.0, 1.0, 0.0) for r in range(releases)]
    return ledger.epsilon(1e-5)


def test_ledger_composes_across_jobs(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=1.0, epsilon_budget=1e9, ledger=str(ledger))
    model = tiny_model()
    _release(dp, model, model, job_id="job-a")
    first = PrivacyLedger(ledger).epsilon(1e-5)
    _release(dp, model, model, job_id="job-b")
    assert PrivacyLedger(ledger).epsilon(1e-5) > first
    assert [r.job_id for r in PrivacyLedger(ledger).releases] == ["job-a", "job-b"]


def test_submit_model_gets_the_last_released_weights(tmp_path: Path) -> None:
    dp = GaussianDP(clip_norm=1.0, noise_multiplier=0.1, epsilon_budget=1e9, ledger=str(tmp_path / "l.json"))
    model = tiny_model()
    released = from_shareable(_release(dp, model, {k: v * 2 for k, v in model.items()})).data
    local = train_result({k: v * 3 for k, v in model.items()}, metrics=None)
    out = dp.process(local, context(OUT, "submit_model", "job-dp"))
    sent = from_shareable(out).data
    assert all(torch.equal(sent[k], released[k]) for k in model)


def test_invalid_settings_name_the_file_to_fix() -> None:
    with pytest.raises(ValueError, match=r"privacy.json"):
        GaussianDP(clip_norm=0, noise_multiplier=1.0, epsilon_budget=1.0)
