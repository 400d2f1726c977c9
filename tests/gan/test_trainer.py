"""The trainer on real (tiny) cached cases: finite losses, both networks move, generator-only weights."""

from __future__ import annotations

import math

import pytest
import torch

from dose3d_fl.gan.network import SeededGenerator, network_args
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import TINY


def test_a_step_gives_finite_losses_and_changes_both_networks(tiny_trainer: GanTrainer) -> None:
    before = tiny_trainer.get_weights()
    stats = tiny_trainer.train_epochs(1)
    after = tiny_trainer.get_weights()
    assert stats["steps"] == TINY.steps_per_epoch
    assert all(math.isfinite(stats[key]) for key in ("loss_d", "loss_g", "loss_adv", "loss_l1", "loss_fm"))
    for prefix in ("generator.", "discriminator."):
        changed = [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]
        assert changed, f"no {prefix}* tensor changed"
    assert all(t.is_contiguous() for t in after.values())  # what is sent does not carry the CPU layout


def test_generator_only_weights_leave_the_discriminator_alone(tiny_trainer: GanTrainer) -> None:
    critic = {k: v for k, v in tiny_trainer.get_weights().items() if k.startswith("discriminator.")}
    other = SeededGenerator(**network_args(TINY.replace(seed=7))).state_dict()
    tiny_trainer.set_weights(other)
    weights = tiny_trainer.get_weights()
    assert all(torch.equal(weights[k], v) for k, v in other.items())
    assert all(torch.equal(weights[k], v) for k, v in critic.items())
    assert set(tiny_trainer.get_weights(generator_only=True)) == set(other)
    with pytest.raises(ValueError, match="same GAN profile"):
        tiny_trainer.set_weights({"generator.bogus": torch.zeros(1)})


def test_evaluate_weights_restores_the_trainers_own(tiny_trainer: GanTrainer) -> None:
    own = tiny_trainer.get_weights()
    other = SeededGenerator(**network_args(TINY.replace(seed=9))).state_dict()
    metrics = tiny_trainer.evaluate_weights(other)
    assert metrics["label_ok"] == 1.0 and all(isinstance(v, float) for v in metrics.values())
    assert all(torch.equal(own[k], v) for k, v in tiny_trainer.get_weights().items())
