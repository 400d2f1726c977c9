"""The local trainer: it learns, validates with MONAI's Dice, exchanges weights and writes checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer
from tests.seg.cases import TINY_PROFILE, write_case


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    train = [write_case(folder, f"train-{i}", seed=i) for i in range(6)]
    val = [write_case(folder, f"val-{i}", seed=100 + i) for i in range(2)]
    return train, val


def test_trainer_learns_the_organ(cases):
    train, val = cases
    trainer = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    untrained = trainer.validate()
    # 16 epochs: at lr 1e-2 the Dice still swings from epoch to epoch early on, and where a swing falls depends
    # on the host's floating-point kernels (after 8 epochs: above 0.7 on one host, 0.689 on another; after 16:
    # 0.948 on the latter, 1.5 s).
    stats = trainer.train_epochs(16)
    trained = trainer.validate()

    assert stats["steps"] == 16 * 3  # 6 cases, 2 per step
    assert stats["epochs"] == stats["total_epochs"] == 16
    assert isinstance(trained["val_dice"], float)
    assert set(trained["case_dice"]) == {"val-0", "val-1"}
    # An untrained network finds nothing useful; after 48 steps the organ is found.
    assert untrained["val_dice"] < 0.5
    assert trained["val_dice"] > 0.7
    assert trained["val_dice"] > untrained["val_dice"] + 0.3


def test_training_is_reproducible_for_a_seed(cases):
    train, val = cases
    runs = []
    for _ in range(2):
        trainer = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1)
        runs.append((trainer.train_epochs(1)["loss"], trainer.get_weights()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][key], runs[1][1][key]) for key in runs[0][1])


def test_weights_round_trip_between_trainers(cases):
    train, val = cases
    source = SegTrainer(train[:2], val, TINY_PROFILE.replace(seed=1), num_threads=1)
    source.train_epochs(1)
    weights = source.get_weights()
    assert all(tensor.device.type == "cpu" for tensor in weights.values())

    target = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1)
    assert not all(torch.equal(weights[k], v) for k, v in target.get_weights().items())
    target.set_weights(weights)
    assert all(torch.equal(weights[k], v) for k, v in target.get_weights().items())
    assert target.validate()["case_dice"] == source.validate()["case_dice"]

    # get_weights is a copy: changing it does not change the network.
    next(iter(weights.values())).add_(1.0)
    assert not torch.equal(next(iter(weights.values())), next(iter(target.get_weights().values())))


def test_checkpoint_round_trip_restores_weights_and_profile(cases, tmp_path):
    train, val = cases
    trainer = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1)
    trainer.train_epochs(1)
    path = trainer.save_checkpoint(tmp_path / "model.pt", meta={"site": "site-1"})

    restored = SegTrainer.from_checkpoint(path, [], val, num_threads=1)
    assert restored.profile == TINY_PROFILE
    assert restored.validate()["case_dice"] == trainer.validate()["case_dice"]

    other = SegTrainer([], val, TINY_PROFILE.replace(seed=5), num_threads=1)
    meta = other.load_checkpoint(path)
    assert meta["site"] == "site-1" and meta["epochs"] == 1
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.get_weights().values(), trainer.get_weights().values(), strict=True)
    )

    with pytest.raises(ValueError, match="channels"):
        SegTrainer([], val, get_profile(), num_threads=1).load_checkpoint(path)


def test_set_weights_refuses_a_different_network(cases):
    train, val = cases
    trainer = SegTrainer(train[:1], val, TINY_PROFILE, num_threads=1)
    with pytest.raises(RuntimeError):
        trainer.set_weights(SegTrainer([], val, get_profile(), num_threads=1).get_weights())


def test_missing_keys_are_reported(cases):
    train, val = cases
    with pytest.raises(ValueError, match="'label'"):
        SegTrainer([{"image": train[0]["image"]}], val)
    with pytest.raises(ValueError, match="no usable training case"):
        SegTrainer([], val, TINY_PROFILE).train_epochs(1)


def test_set_progress_applies_the_profile_schedule_to_the_optimiser(cases):
    train, val = cases
    profile = TINY_PROFILE.replace(lr=2e-3, lr_schedule="cosine", min_lr_ratio=0.0)
    trainer = SegTrainer(train, val, profile, num_threads=1)
    assert trainer.set_progress(0.5) == pytest.approx(1e-3)
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [pytest.approx(1e-3)]


def test_reset_optimizer_forgets_the_moments_and_keeps_the_learning_rate(cases):
    train, val = cases
    trainer = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    trainer.set_progress(0.5)
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer.train_epochs(1)
    assert trainer.optimizer.state
    trainer.reset_optimizer()
    assert not trainer.optimizer.state
    assert trainer.optimizer.param_groups[0]["lr"] == lr
    stats = trainer.train_epochs(1)  # Adam starts again at step 1
    (first, *_) = trainer.optimizer.state.values()
    assert int(first["step"]) == stats["steps"]


def test_a_regularizer_is_added_to_the_training_loss(cases):
    """FedProx passes its proximal term as a regularizer: a strong pull towards the start keeps the weights
    there; the epoch statistics carry the data-wait and caching times the benchmark reads."""
    train, val = cases
    plain = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    anchored = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    start = {name: p.detach().clone() for name, p in anchored.model.named_parameters()}

    def pull(model: torch.nn.Module) -> torch.Tensor:
        return 1e4 * sum(torch.sum((p - start[n]) ** 2) for n, p in model.named_parameters())

    plain.train_epochs(1)
    anchored_stats = anchored.train_epochs(1, regularizer=pull)

    def drift(trainer: SegTrainer) -> float:
        return sum(float(torch.sum((p - start[n]) ** 2)) for n, p in trainer.model.named_parameters())

    assert drift(anchored) < 0.1 * drift(plain)
    assert {"cache_seconds", "data_seconds"} <= set(anchored_stats)
    assert 0 <= anchored_stats["data_seconds"] <= anchored_stats["seconds"]


def test_training_never_writes_into_the_cached_volumes(cases):
    """The training cache is not copied per step (copy_cache=False): random crops must leave it as it was."""
    train, val = cases
    trainer = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    dataset = trainer.train_loader.dataset
    before = [item["image"].clone() for item in dataset._cache]
    trainer.train_epochs(2)
    assert all(torch.equal(old, item["image"]) for old, item in zip(before, dataset._cache, strict=True))


def test_cpu_bfloat16_convolves_in_bfloat16_while_training_only_and_keeps_float32_weights(cases):
    """Training runs the network under bfloat16 autocast; the loss, the weights it updates and hands out, and
    validation stay float32, and a step still learns."""
    train, val = cases
    trainer = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1, cpu_bfloat16=True)
    image = torch.rand(1, 1, *TINY_PROFILE.roi_size)
    with torch.no_grad(), trainer._autocast(training=True):
        assert trainer.model(image).dtype == torch.bfloat16
    with torch.no_grad(), trainer._autocast():
        assert trainer.model(image).dtype == torch.float32
    before = {name: value.clone() for name, value in trainer.get_weights().items()}
    loss = trainer.train_epochs(1)["loss"]
    weights = trainer.get_weights()
    assert math.isfinite(loss) and all(value.dtype == before[name].dtype for name, value in weights.items())
    assert any(not torch.equal(weights[name], before[name]) for name in before)
    assert trainer.predict(image).dtype == torch.float32


def test_channels_last_computes_the_same_up_to_rounding_and_hands_out_contiguous_weights(cases):
    """The same network in the channels_last_3d layout: the same logits and gradients but for the order of
    the sums (training trajectories then drift apart, as with another thread count); the weights it hands
    out (what a site sends, what a checkpoint keeps) are contiguous."""
    train, val = cases
    plain = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1)
    fast = SegTrainer(train[:2], val, TINY_PROFILE, num_threads=1, channels_last=True)
    convs = [m.weight for m in fast.model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # a real change of layout, not a no-op
    assert all(tensor.is_contiguous() for tensor in fast.get_weights().values())

    batch = next(iter(plain.train_loader))
    gradients = []
    for trainer in (plain, fast):
        trainer.model.train()
        image = batch["image"].contiguous(memory_format=trainer.memory_format)
        logits = trainer.model(image)
        trainer.loss_fn(logits, batch["label"], None).backward()
        gradients.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        trainer.model.zero_grad()
    assert set(gradients[0]) == set(gradients[1])
    scale = max(float(g.abs().max()) for g in gradients[0].values())
    for name, grad in gradients[
        1
    ].items():  # rounding: 1e-5 of the largest gradient (sums over crops), or 0.01 %
        assert torch.allclose(grad, gradients[0][name], rtol=1e-4, atol=1e-5 * scale), name
