"""The networks: SPADE generator without transposed convolution, MONAI patch discriminator, seeded pairs."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import SPADE
from monai.networks.nets import MultiScalePatchDiscriminator, PatchDiscriminator
from torch import nn

from dose3d_fl.gan.label_maps import one_hot
from dose3d_fl.gan.network import GanPair, SeededGenerator, build_gan, generator_weights, network_args
from dose3d_fl.gan.profiles import GAN_PROFILES, GanProfile, get_gan_profile
from dose3d_fl.seg.profiles import get_profile
from tests.gan.conftest import TINY

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@pytest.mark.parametrize("name", sorted(GAN_PROFILES))
def test_generator_has_no_transposed_convolution_and_spade_at_every_stage(name: str) -> None:
    pair = build_gan(get_gan_profile(name))
    modules = list(pair.generator.modules())
    assert not any(isinstance(m, TRANSPOSED) for m in pair.modules()), "a transposed convolution"
    # One SPADE per stage (two per residual block) and one at full size: the labels enter at every scale.
    assert sum(isinstance(m, SPADE) for m in modules) == 2 * len(get_gan_profile(name).generator_channels) + 1
    assert isinstance(pair.discriminator.net, PatchDiscriminator | MultiScalePatchDiscriminator)


def test_pair_keys_and_seeded_generator_match() -> None:
    pair, alone = build_gan(TINY), SeededGenerator(**network_args(TINY))
    assert {k.split(".")[0] for k in pair.state_dict()} == {"generator", "discriminator"}
    assert set(alone.state_dict()) == set(generator_weights(pair.state_dict()))
    assert all(torch.equal(pair.state_dict()[k], v) for k, v in alone.state_dict().items())
    again = GanPair(**network_args(TINY))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in pair.state_dict().items())
    maps = torch.randint(0, TINY.label_classes, (3, 16, 16, 16))
    images = pair(one_hot(maps, TINY.label_classes))
    assert images.shape == (3, 1, 16, 16, 16) and images.min() >= 0 and images.max() <= 1
    outputs, features = pair.discriminator(torch.cat([images, one_hot(maps, TINY.label_classes)], 1))
    assert len(outputs) == 1 and features[0]


@pytest.mark.parametrize("name", sorted(GAN_PROFILES))
def test_profiles_round_trip(name: str) -> None:
    profile = get_gan_profile(name)
    assert GanProfile.from_dict(profile.to_dict()) == profile
    assert profile.start_size * profile.upsampling == profile.crop_size
    with pytest.raises(ValueError, match="multiple of"):
        profile.replace(crop_size=profile.crop_size + 1)
    with pytest.raises(ValueError, match="unknown GAN profile field"):
        GanProfile.from_dict({**profile.to_dict(), "critic_steps": 2})


@pytest.mark.parametrize("name", ["cpu-small", "gpu"])
def test_shipped_profiles_work_on_the_segmentation_training_crop(name: str) -> None:
    profile = get_gan_profile(name)
    seg = get_profile(profile.seg_profile)
    assert (profile.crop_size,) * 3 == tuple(seg.roi_size) and tuple(profile.pixdim) == tuple(seg.pixdim)
