"""The label-conditioned GAN's networks: a SPADE generator and a MONAI patch discriminator.

The generator (``SpadeGenerator``) turns a one-hot label map (outside the body, body, organs) and noise into
a CT crop; the label map enters at every scale through MONAI's ``SPADE`` normalisation (Park et al. 2019),
so the organs and the body outline shape the image from the coarsest feature map to the last voxel. It
up-samples by interpolation followed by a convolution (resize-convolution, Odena et al. 2016): there is no
transposed convolution, whose uneven overlap leaves a checkerboard. Per-voxel noise, scaled per channel by a
learned weight, is added at every stage (the scanner's noise and texture have no counterpart in the label).

The discriminator sees the image with its label map (``1 + N + 2`` channels): MONAI's ``PatchDiscriminator``
(one scale) or ``MultiScalePatchDiscriminator``, with instance normalisation, so that FedAvg averages no
batch statistics.

Both live in one ``nn.Module`` (``GanPair``: state-dict keys ``generator.*`` and ``discriminator.*``), so
FedAvg of both is FedAvg of one state dict. ``SeededGenerator`` holds the generator alone under the same
``generator.*`` keys: the server's model when sites keep their discriminators local (``generator-only``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import SPADE, Upsample
from monai.networks.nets import MultiScalePatchDiscriminator, PatchDiscriminator
from torch import nn
from torch.nn import functional

from dose3d_fl.gan.profiles import GanProfile

GENERATOR_PREFIX = "generator."
DISCRIMINATOR_PREFIX = "discriminator."
SLOPE = 0.2  # LeakyReLU slope, as in SPADE and pix2pixHD


def network_args(profile: GanProfile) -> dict[str, Any]:
    """JSON-serialisable constructor arguments of ``GanPair`` / ``SeededGenerator`` for a profile.

    A job definition names the class and these arguments instead of pickling a module.
    """
    return {
        "seed": profile.seed,
        "crop_size": profile.crop_size,
        "label_classes": profile.label_classes,
        "latent_channels": profile.latent_channels,
        "generator_channels": list(profile.generator_channels),
        "output_channels": profile.output_channels,
        "spade_channels": profile.spade_channels,
        "discriminator_channels": profile.discriminator_channels,
        "discriminator_layers": profile.discriminator_layers,
        "discriminator_scales": profile.discriminator_scales,
    }


class SpadeResBlock(nn.Module):
    """SPADE residual block: (SPADE, LeakyReLU, 3^3 convolution, noise) then (SPADE, LeakyReLU, 3^3
    convolution), plus a 1^3 convolution shortcut when the channel count changes."""

    def __init__(self, label_classes: int, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = SPADE(label_classes, in_channels, spatial_dims=3, hidden_channels=hidden)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.norm2 = SPADE(label_classes, out_channels, spatial_dims=3, hidden_channels=hidden)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.shortcut = (
            nn.Conv3d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.noise_weight = nn.Parameter(torch.zeros(1, out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        h = self.conv1(functional.leaky_relu(self.norm1(x, labels), SLOPE)) + self.noise_weight * noise
        h = self.conv2(functional.leaky_relu(self.norm2(h, labels), SLOPE))
        return self.shortcut(x) + h


class SpadeGenerator(nn.Module):
    """One-hot label map ``(B, C, S, S, S)`` and noise to an image ``(B, 1, S, S, S)`` in [0, 1].

    Shape arithmetic: the noise starts at ``s = S / 2^K`` (``K = len(channels)``) with the label map
    (nearest-neighbour down-sampled) beside it; stage ``k`` (a ``SpadeResBlock`` with ``channels[k]``) runs at
    ``s * 2^k`` and is followed by a 2x trilinear up-sampling; at full size a 3^3 convolution to
    ``output_channels``, SPADE, LeakyReLU and a 3^3 convolution form the image, bounded by a sigmoid.

    Args:
        crop_size: ``S``.
        label_classes: one-hot channels of the label map.
        latent_channels: channels of the start noise.
        channels: channels per stage, coarsest first.
        output_channels: channels of the full-size stage.
        spade_channels: hidden channels of the SPADE blocks (half at full size).
    """

    def __init__(
        self,
        crop_size: int,
        label_classes: int,
        latent_channels: int,
        channels: Sequence[int],
        output_channels: int,
        spade_channels: int,
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.latent_channels = latent_channels
        self.stem = nn.Conv3d(latent_channels + label_classes, channels[0], 3, padding=1)
        stages, previous = [], channels[0]
        for width in channels:
            stages.append(SpadeResBlock(label_classes, previous, width, spade_channels))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.upsample = Upsample(
            3, mode="nontrainable", interp_mode="trilinear", align_corners=False, pre_conv=None
        )
        self.to_output = nn.Conv3d(previous, output_channels, 3, padding=1)
        self.output_norm = SPADE(
            label_classes, output_channels, spatial_dims=3, hidden_channels=max(spade_channels // 2, 1)
        )
        self.output_noise_weight = nn.Parameter(torch.zeros(1, output_channels, 1, 1, 1))
        self.to_image = nn.Conv3d(output_channels, 1, 3, padding=1)

    def noise_shapes(self, batch: int, size: int | None = None) -> list[tuple[int, ...]]:
        """Shapes of the noise ``forward`` takes for ``size``-voxel images (default the training crop): the
        start noise, then one map per stage and at full size.

        Raises:
            ValueError: ``size`` is not a multiple of the generator's up-sampling factor.
        """
        size = size or self.crop_size
        factor = 2 ** len(self.stages)
        if size % factor or size < 2 * factor:
            raise ValueError(
                f"the generator draws sizes that are multiples of {factor} (at least {2 * factor}), not {size}"
            )
        start = size // factor
        sizes = [start * 2**k for k in range(len(self.stages) + 1)]
        return [(batch, self.latent_channels, start, start, start)] + [(batch, 1, s, s, s) for s in sizes]

    def draw_noise(
        self,
        batch: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        size: int | None = None,
    ) -> list[torch.Tensor]:
        """Standard normal noise for ``forward`` (drawn on the CPU, so a seed gives the same draw anywhere);
        ``size``: edge of the images to draw (default the training crop; the network is fully convolutional)."""
        return [
            torch.randn(shape, generator=generator).to(device) for shape in self.noise_shapes(batch, size)
        ]

    def forward(self, labels: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The image for one-hot ``labels``; ``noise`` from ``draw_noise`` (default: a fresh draw)."""
        if noise is None:
            noise = self.draw_noise(labels.shape[0], device=labels.device, size=labels.shape[-1])
        start_labels = functional.interpolate(labels, size=noise[0].shape[2:], mode="nearest")
        x = self.stem(torch.cat([noise[0], start_labels], 1))
        for index, stage in enumerate(self.stages):
            if index:
                x = self.upsample(x)
            x = stage(x, labels, noise[index + 1])
        x = self.to_output(self.upsample(x)) + self.output_noise_weight * noise[-1]
        return torch.sigmoid(self.to_image(functional.leaky_relu(self.output_norm(x, labels), SLOPE)))


class ConditionalDiscriminator(nn.Module):
    """MONAI's patch discriminator on the image and its one-hot label map, one or several scales.

    ``forward`` returns each scale's patch scores (unbounded: least-squares GAN) and each scale's
    intermediate features (for feature matching).
    """

    def __init__(self, crop_size: int, in_channels: int, channels: int, layers: int, scales: int) -> None:
        super().__init__()
        common = {"spatial_dims": 3, "channels": channels, "in_channels": in_channels, "norm": "INSTANCE"}
        self.scales = scales
        if scales == 1:
            self.net: nn.Module = PatchDiscriminator(num_layers_d=layers, **common)
        else:
            self.net = MultiScalePatchDiscriminator(
                num_d=scales, num_layers_d=layers, minimum_size_im=crop_size, **common
            )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if self.scales == 1:
            out = self.net(x)
            return [out[-1]], [out[:-1]]
        return self.net(x)


class GanPair(nn.Module):
    """Generator and discriminator in one module, with initial weights that depend only on ``seed`` (the
    global random state is left as it was), like ``dose3d_fl.seg.network.SeededUNet``.

    Args:
        seed: seed of the initial weights.
        crop_size: edge of the generated crops in voxels.
        label_classes: classes of the label map (outside, body, organs).
        latent_channels: channels of the generator's start noise.
        generator_channels: channels per generator stage.
        output_channels: channels of the generator's full-size stage.
        spade_channels: hidden channels of the SPADE blocks.
        discriminator_channels: channels of the discriminator's first layer.
        discriminator_layers: down-sampling layers of the discriminator.
        discriminator_scales: scales of the discriminator (1: one ``PatchDiscriminator``).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        crop_size: int,
        label_classes: int,
        latent_channels: int,
        generator_channels: Sequence[int],
        output_channels: int,
        spade_channels: int,
        discriminator_channels: int,
        discriminator_layers: int,
        discriminator_scales: int = 1,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = SpadeGenerator(
                crop_size, label_classes, latent_channels, generator_channels, output_channels, spade_channels
            )
            self.discriminator = ConditionalDiscriminator(
                crop_size,
                1 + label_classes,
                discriminator_channels,
                discriminator_layers,
                discriminator_scales,
            )

    def forward(self, labels: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Generate images for one-hot label maps."""
        return self.generator(labels, noise)


class SeededGenerator(nn.Module):
    """The generator of ``GanPair`` alone, same keys (``generator.*``) and same initial weights for a seed.

    Accepts ``GanPair``'s arguments (the discriminator's are ignored), so one argument set builds either.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        crop_size: int,
        label_classes: int,
        latent_channels: int,
        generator_channels: Sequence[int],
        output_channels: int,
        spade_channels: int,
        **discriminator_args: Any,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = SpadeGenerator(
                crop_size, label_classes, latent_channels, generator_channels, output_channels, spade_channels
            )

    def forward(self, labels: torch.Tensor, noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Generate images for one-hot label maps."""
        return self.generator(labels, noise)


def build_gan(profile: GanProfile) -> GanPair:
    """The profile's ``GanPair``, seeded with ``profile.seed``."""
    return GanPair(**network_args(profile))


def build_generator(profile: GanProfile) -> SeededGenerator:
    """The profile's generator alone (same initial weights as ``build_gan``'s)."""
    return SeededGenerator(**network_args(profile))


def generator_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``generator.*`` entries of a state dict."""
    return {name: value for name, value in state.items() if name.startswith(GENERATOR_PREFIX)}
