"""GAN profiles: every hyper-parameter of the paired 3D GAN, by name.

A profile is stored in each GAN checkpoint, so a model file knows its crop size, latent size and networks.
Two profiles ship:

* ``cpu-small`` (default): 32^3 crops on the segmentation ``cpu-small`` grid (4 mm voxels, the spleen's
  HU window). 32^3 at 4 mm is 12.8 cm, enough for the whole spleen (about 12 cm long) with some context,
  and small enough that one WGAN-GP step (critic with gradient penalty, then generator) of a batch of 8
  takes a fraction of a second on one CPU thread: a few hundred steps per site and round fit in minutes on
  2 cores. Synthetic pairs on the segmentation grid plug straight into the segmentation trainer.
* ``cpu-tiny``: 16^3 crops and tiny networks, for tests and smoke runs of the job.
* ``gpu``: 64^3 crops at 2 mm (the same 12.8 cm field at twice the resolution), wider networks, more steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dose3d_fl.seg.profiles import named_profile

# Fields that change the networks' tensors or what a sample means: two profiles that differ in one of them
# cannot share weights.
MODEL_FIELDS = (
    "seg_profile",
    "pixdim",
    "crop_size",
    "latent_dim",
    "start_channels",
    "generator_channels",
    "discriminator_channels",
)


@dataclass(frozen=True)
class GanProfile:
    """Hyper-parameters of a paired (CT crop + organ mask) 3D GAN.

    Attributes:
        name: profile name (``get_gan_profile`` key).
        seg_profile: segmentation profile whose preprocessing (orientation, HU window, body crop) the real
            crops go through; ``pixdim`` overrides its voxel size.
        pixdim: voxel size in mm of the crops.
        crop_size: edge of the cubic crop in voxels (a power of two times the generator's start size).
        crop_jitter: largest random shift, in voxels, of a training crop's centre from the organ's centre.
        latent_dim: length of the generator's input noise vector.
        start_channels: channels of the generator's first (smallest) feature map.
        generator_channels: channels of each up-sampling stage of the generator (the last is 2: image, mask).
        discriminator_channels: channels of each down-sampling stage of the critic.
        batch_size: crops per optimisation step.
        steps_per_epoch: generator steps in one local epoch.
        critic_steps: critic steps per generator step (WGAN-GP).
        gp_weight: gradient-penalty weight (WGAN-GP).
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the critic.
        betas: Adam betas (both networks).
        metric_samples: synthetic crops drawn for the quality metrics.
        memorization_threshold: a sample whose mean absolute difference (both channels, window units) to
            its nearest local training crop is below this is dropped as a copy.
        volume_tolerance: a sample's organ volume is plausible between ``min / tolerance`` and
            ``max * tolerance`` of the local training crops' organ volumes.
        seed: random seed (initial weights, crops, noise).
    """

    name: str
    pixdim: tuple[float, float, float]
    crop_size: int
    generator_channels: tuple[int, ...]
    discriminator_channels: tuple[int, ...]
    seg_profile: str = "cpu-small"
    crop_jitter: int = 3
    latent_dim: int = 64
    start_channels: int = 64
    batch_size: int = 8
    steps_per_epoch: int = 20
    critic_steps: int = 2
    gp_weight: float = 10.0
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    metric_samples: int = 16
    memorization_threshold: float = 0.02
    volume_tolerance: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.generator_channels[-1:] != (2,):
            raise ValueError(
                f"GAN profile {self.name!r}: the generator's last stage must have 2 channels (image, mask), "
                f"got {self.generator_channels}"
            )
        if self.crop_size % self.upsampling != 0 or self.start_size < 2:
            raise ValueError(
                f"GAN profile {self.name!r}: crop_size {self.crop_size} must be a multiple of "
                f"2^{len(self.generator_channels)} = {self.upsampling} with a start size of at least 2"
            )
        if len(self.pixdim) != 3:
            raise ValueError(f"GAN profile {self.name!r}: pixdim needs three values (3D)")
        if self.critic_steps < 1 or self.batch_size < 2:
            raise ValueError(f"GAN profile {self.name!r}: critic_steps >= 1 and batch_size >= 2 needed")

    @property
    def upsampling(self) -> int:
        """Factor by which the generator enlarges its start feature map (stride 2 per stage)."""
        return 2 ** len(self.generator_channels)

    @property
    def start_size(self) -> int:
        """Edge of the generator's first feature map."""
        return self.crop_size // self.upsampling

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanProfile:
        """Inverse of ``to_dict``.

        Raises:
            ValueError: unknown keys (a profile written by a newer version) or invalid values.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown GAN profile field(s): {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    def incompatibilities(self, other: GanProfile) -> list[str]:
        """Names of the ``MODEL_FIELDS`` in which two profiles differ (empty: they can share weights)."""
        return [name for name in MODEL_FIELDS if getattr(self, name) != getattr(other, name)]

    def replace(self, **changes: Any) -> GanProfile:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


GAN_PROFILES: dict[str, GanProfile] = {
    profile.name: profile
    for profile in (
        GanProfile(
            name="cpu-small",
            pixdim=(4.0, 4.0, 4.0),
            crop_size=32,
            generator_channels=(32, 16, 2),
            discriminator_channels=(16, 32, 64),
            latent_dim=64,
            start_channels=64,
            batch_size=8,
            steps_per_epoch=20,
            critic_steps=2,
        ),
        # For tests and smoke runs of the job (seconds per round): 16^3 crops, tiny networks.
        GanProfile(
            name="cpu-tiny",
            pixdim=(4.0, 4.0, 4.0),
            crop_size=16,
            crop_jitter=1,
            generator_channels=(8, 2),
            discriminator_channels=(8, 16),
            latent_dim=16,
            start_channels=16,
            batch_size=4,
            steps_per_epoch=2,
            critic_steps=1,
            metric_samples=4,
        ),
        GanProfile(
            name="gpu",
            pixdim=(2.0, 2.0, 2.0),
            crop_size=64,
            generator_channels=(128, 64, 32, 2),
            discriminator_channels=(32, 64, 128, 256),
            latent_dim=128,
            start_channels=256,
            batch_size=16,
            steps_per_epoch=100,
            critic_steps=5,
            metric_samples=32,
        ),
    )
}
DEFAULT_GAN_PROFILE = "cpu-small"


def get_gan_profile(name: str = DEFAULT_GAN_PROFILE) -> GanProfile:
    """The named GAN profile.

    Raises:
        ValueError: no profile of that name (the message lists the known ones).
    """
    return named_profile(GAN_PROFILES, name, "GAN")
