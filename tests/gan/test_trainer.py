"""The WGAN-GP trainer on real (tiny) cached cases: finite losses, weights that move, seeded networks."""

from __future__ import annotations

import math

import pytest
import torch

from dose3d_fl.gan.network import GanPair, SeededGenerator, build_gan, generator_weights, network_args
from dose3d_fl.gan.profiles import GAN_PROFILES, GanProfile, get_gan_profile
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import TINY


def test_a_gan_step_gives_finite_losses_and_changes_both_networks(tiny_trainer: GanTrainer) -> None:
    before = tiny_trainer.get_weights()
    stats = tiny_trainer.train_epochs(1)
    after = tiny_trainer.get_weights()
    assert stats["steps"] == TINY.steps_per_epoch
    assert all(math.isfinite(stats[key]) for key in ("loss_d", "loss_g", "wasserstein"))
    for prefix in ("generator.", "discriminator."):
        changed = [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]
        assert changed, f"no {prefix}* tensor changed"


def test_pair_keys_and_seeded_generator_match() -> None:
    pair, alone = build_gan(TINY), SeededGenerator(**network_args(TINY))
    keys = set(pair.state_dict())
    assert {k.split(".")[0] for k in keys} == {"generator", "discriminator"}
    assert set(alone.state_dict()) == set(generator_weights(pair.state_dict()))
    assert all(torch.equal(pair.state_dict()[k], v) for k, v in alone.state_dict().items())
    again = GanPair(**network_args(TINY))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in pair.state_dict().items())
    samples = pair(torch.randn(3, TINY.latent_dim))
    assert samples.shape == (3, 2, 16, 16, 16) and samples.min() >= 0 and samples.max() <= 1


def test_generator_only_weights_leave_the_critic_alone(tiny_trainer: GanTrainer) -> None:
    critic = {k: v for k, v in tiny_trainer.get_weights().items() if k.startswith("discriminator.")}
    other = SeededGenerator(**network_args(TINY.replace(seed=7))).state_dict()
    tiny_trainer.set_weights(other)
    weights = tiny_trainer.get_weights()
    assert all(torch.equal(weights[k], v) for k, v in other.items())
    assert all(torch.equal(weights[k], v) for k, v in critic.items())
    assert set(tiny_trainer.get_weights(generator_only=True)) == set(other)
    with pytest.raises(ValueError, match="same GAN profile"):
        tiny_trainer.set_weights({"generator.bogus": torch.zeros(1)})


@pytest.mark.parametrize("name", sorted(GAN_PROFILES))
def test_profiles_round_trip_and_build(name: str) -> None:
    profile = get_gan_profile(name)
    assert GanProfile.from_dict(profile.to_dict()) == profile
    assert profile.start_size * profile.upsampling == profile.crop_size
    with pytest.raises(ValueError, match="2 channels"):
        profile.replace(generator_channels=(8, 3))
