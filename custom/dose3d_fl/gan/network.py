"""The paired GAN's networks: MONAI's 3D ``Generator`` and a ``Discriminator`` used as a WGAN critic.

Both live in one ``nn.Module`` (``GanPair``: state-dict keys ``generator.*`` and ``discriminator.*``), so
FedAvg of both is FedAvg of one state dict. ``SeededGenerator`` holds the generator alone under the same
``generator.*`` keys: the server's model when sites keep their critics local (``generator-only``).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import Discriminator, Generator
from torch import nn

from dose3d_fl.gan.profiles import GanProfile

GENERATOR_PREFIX = "generator."
DISCRIMINATOR_PREFIX = "discriminator."
# LeakyReLU, no normalisation in the critic: the WGAN-GP gradient penalty is defined per sample, which batch
# or instance statistics would mix up (Gulrajani et al. 2017, section 4).
CRITIC_ACT = ("leakyrelu", {"negative_slope": 0.2})


def network_args(profile: GanProfile) -> dict[str, Any]:
    """JSON-serialisable constructor arguments of ``GanPair`` / ``SeededGenerator`` for a profile.

    A job definition names the class and these arguments instead of pickling a module.
    """
    return {
        "seed": profile.seed,
        "crop_size": profile.crop_size,
        "latent_dim": profile.latent_dim,
        "start_channels": profile.start_channels,
        "generator_channels": list(profile.generator_channels),
        "discriminator_channels": list(profile.discriminator_channels),
    }


class PairedGenerator(nn.Module):
    """Noise ``(B, latent_dim)`` to a crop pair ``(B, 2, S, S, S)``: channel 0 the windowed CT, channel 1 the
    organ probability, both in [0, 1].

    MONAI's ``Generator`` maps the noise through a linear layer to a ``start_channels x s^3`` feature map
    (``s = crop_size / 2^stages``) and up-samples it by transposed convolutions, stride 2 per stage, with
    instance normalisation and PReLU; a sigmoid bounds both output channels.
    """

    def __init__(
        self, crop_size: int, latent_dim: int, start_channels: int, channels: list[int] | tuple[int, ...]
    ) -> None:
        super().__init__()
        start = crop_size // 2 ** len(channels)
        self.latent_dim = latent_dim
        self.net = Generator(
            latent_shape=(latent_dim,),
            start_shape=(start_channels, start, start, start),
            channels=tuple(channels),
            strides=(2,) * len(channels),
            num_res_units=0,
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(noise))


def build_critic(crop_size: int, channels: list[int] | tuple[int, ...]) -> nn.Module:
    """MONAI's ``Discriminator`` on 2-channel crops, with an unbounded score (no sigmoid: a WGAN critic)."""
    return Discriminator(
        in_shape=(2, crop_size, crop_size, crop_size),
        channels=tuple(channels),
        strides=(2,) * len(channels),
        num_res_units=0,
        act=CRITIC_ACT,
        norm=None,
        dropout=None,
        last_act=None,
    )


class GanPair(nn.Module):
    """Generator and critic of the paired 3D GAN in one module, with initial weights that depend only on
    ``seed`` (the global random state is left as it was), like ``dose3d_fl.seg.network.SeededUNet``.

    Args:
        seed: seed of the initial weights.
        crop_size: edge of the generated crops in voxels.
        latent_dim: length of the noise vector.
        start_channels: channels of the generator's first feature map.
        generator_channels: channels per generator stage (the last is 2).
        discriminator_channels: channels per critic stage.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        crop_size: int,
        latent_dim: int,
        start_channels: int,
        generator_channels: list[int] | tuple[int, ...],
        discriminator_channels: list[int] | tuple[int, ...],
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = PairedGenerator(crop_size, latent_dim, start_channels, generator_channels)
            self.discriminator = build_critic(crop_size, discriminator_channels)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Generate crop pairs from noise."""
        return self.generator(noise)


class SeededGenerator(nn.Module):
    """The generator of ``GanPair`` alone, same keys (``generator.*``) and same initial weights for a seed.

    Accepts ``GanPair``'s arguments (``discriminator_channels`` is ignored), so one argument set builds
    either module.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        crop_size: int,
        latent_dim: int,
        start_channels: int,
        generator_channels: list[int] | tuple[int, ...],
        discriminator_channels: list[int] | tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = PairedGenerator(crop_size, latent_dim, start_channels, generator_channels)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Generate crop pairs from noise."""
        return self.generator(noise)


def build_gan(profile: GanProfile) -> GanPair:
    """The profile's ``GanPair``, seeded with ``profile.seed``."""
    return GanPair(**network_args(profile))


def generator_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``generator.*`` entries of a state dict."""
    return {name: value for name, value in state.items() if name.startswith(GENERATOR_PREFIX)}
