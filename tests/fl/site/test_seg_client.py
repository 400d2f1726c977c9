"""The site's client script: FedProx's proximal term when the server asks for it, and a fresh local
optimiser every round unless the job keeps its moments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nvflare.app_common.abstract.fl_model import FLModel

from dose3d_fl.fl.site import seg_client
from dose3d_fl.fl.site.config import SiteConfig
from dose3d_fl.fl.site.seg_client import SiteRunner, fedprox_term
from dose3d_fl.seg.trainer import SegTrainer
from tests.seg.cases import TINY_PROFILE, write_case


def test_no_fedprox_mu_no_term() -> None:
    assert fedprox_term(FLModel(params={}, meta={}), torch.nn.Linear(2, 2)) is None


def test_the_term_is_zero_at_the_global_model_and_grows_away_from_it() -> None:
    model = torch.nn.Linear(3, 2)
    term = fedprox_term(FLModel(params={}, meta={"fedprox_mu": 0.5}), model)
    assert term is not None
    assert float(term(model)) == 0.0
    with torch.no_grad():
        model.weight += 1.0  # 6 weights moved by 1: mu / 2 * 6 = 1.5
    value = term(model)
    assert float(value) == 1.5
    value.backward()
    assert model.weight.grad is not None  # the term trains the local model, not the frozen reference


class _Scalars:
    """Collects what the runner reports to NVFlare's tracking writer."""

    def __init__(self) -> None:
        self.values: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.values.append((tag, value, step))


def _runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: bool) -> SiteRunner:
    """A site runner on two tiny training cases and one validation case, its state in ``tmp_path``."""
    train = [write_case(tmp_path / "cache", f"t{i}", seed=i) for i in range(2)]
    val = [write_case(tmp_path / "cache", "v0", seed=50)]
    # The site's own cached cases (without a split file); its state goes to the cache's fl_state folder.
    monkeypatch.setattr(
        seg_client,
        "build_site_trainer",
        lambda config, profile, site: SegTrainer(train, val, profile, num_threads=1),
    )
    config = SiteConfig(cache_dir=str(tmp_path / "cache"))
    return SiteRunner("site-1", config, TINY_PROFILE, local_epochs=1, **options)


@pytest.mark.parametrize("keep", [False, True])
def test_each_round_starts_adam_afresh_unless_the_job_keeps_its_moments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    runner = _runner(tmp_path, monkeypatch, keep_optimizer_state=keep)
    writer = _Scalars()
    steps = []
    for current_round in range(2):
        incoming = FLModel(params=runner.trainer.get_weights(), current_round=current_round, total_rounds=2)
        result = runner.train_round(incoming, writer)
        steps.append(result.meta["NUM_STEPS_CURRENT_ROUND"])
        (first, *_) = runner.trainer.optimizer.state.values()
        assert int(first["step"]) == (sum(steps) if keep else steps[-1])
    assert [tag for tag, _, _ in writer.values].count("train_loss") == 2


@pytest.mark.parametrize("mode", ["fedavg", "fedbn", "silobn"])
def test_the_site_keeps_its_own_norm_tensors_and_takes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """FedAvg keeps nothing; FedBN its BatchNorm layers; SiloBN only their statistics (scale and shift federated)."""
    runner = _runner(tmp_path, monkeypatch, fedbn=mode == "fedbn", silobn=mode == "silobn")
    own = runner.trainer.get_weights()
    incoming = {k: v + 1 if v.is_floating_point() else v + 3 for k, v in own.items()}
    runner.load_global(runner.trainer, incoming)
    loaded = runner.trainer.get_weights()
    layers = {k for k in own if ".adn.N." in k}
    statistics = {k for k in layers if not k.endswith((".weight", ".bias"))}
    kept = {"fedavg": set(), "fedbn": layers, "silobn": statistics}[mode]
    assert statistics and statistics < layers and runner.site_keys == kept
    for key in own:
        assert torch.equal(loaded[key], own[key] if key in kept else incoming[key]), key
    # Each round's state records what the site kept: its model is written from exactly these.
    runner.train_round(FLModel(params=incoming, current_round=0, total_rounds=1), _Scalars())
    assert runner.state.site_keys(0) == kept


def test_fedbn_and_silobn_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        _runner(tmp_path, monkeypatch, fedbn=True, silobn=True)


def test_a_restarted_fedbn_site_gets_its_own_batch_norm_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _runner(tmp_path, monkeypatch, fedbn=True)
    global_weights = first.trainer.get_weights()
    first.train_round(FLModel(params=global_weights, current_round=0, total_rounds=2), _Scalars())
    trained = first.trainer.get_weights()
    keys = first.site_keys
    assert any(not torch.equal(trained[k], global_weights[k]) for k in keys)  # training moved its norm
    # A new process: a fresh trainer, the same state folder; round 1 restores round 0's state first.
    second = _runner(tmp_path, monkeypatch, fedbn=True)
    assert second.state.restore(second.trainer, 1)
    second.load_global(second.trainer, global_weights)
    loaded = second.trainer.get_weights()
    assert all(torch.equal(loaded[k], trained[k]) for k in keys)
    assert all(torch.equal(loaded[k], global_weights[k]) for k in loaded if k not in keys)


@pytest.mark.parametrize("fedbn", [False, True])
def test_cross_site_evaluation_scores_with_the_site_batch_norm_under_fedbn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fedbn: bool
) -> None:
    runner = _runner(tmp_path, monkeypatch, fedbn=fedbn)
    own = runner.trainer.get_weights()
    sent = {k: v * 2 if v.is_floating_point() else v for k, v in own.items()}
    metrics = runner.evaluate(sent)
    assert metrics["val_cases"] == 1 and 0.0 <= metrics["val_dice"] <= 1.0
    scored = runner.trainer.get_weights()
    norm_keys = {k for k in own if ".adn.N." in k and own[k].is_floating_point()}
    assert all(torch.equal(scored[k], own[k] if fedbn else sent[k]) for k in norm_keys)
    assert all(torch.equal(scored[k], sent[k]) for k in own if k not in norm_keys and ".adn.N." not in k)
