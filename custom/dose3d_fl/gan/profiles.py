"""GAN profiles: every hyper-parameter of the label-conditioned 3D GAN, by name.

A profile is stored in each GAN checkpoint, so a model file knows its crop, its HU window, its networks and
its losses. Four profiles ship:

* ``cpu-small`` (default): the segmentation ``cpu-small`` training crop (48^3 at 4 mm, 19 cm), a SPADE
  generator with three resolution stages and a patch discriminator, sized for the 3-site demo federation
  on 2 CPU cores: 5 rounds x 5 local epochs took 478 s (benchmarks/results/gan_augment_design1.json).
* ``cpu-small-posneg``: ``cpu-small`` with crops placed like the segmentation trainer's positive and
  negative crops (the second design of the augmentation benchmark: 522 s for the same training,
  benchmarks/results/gan_augment_design2_before_fixes.json).
* ``cpu-tiny``: 16^3 crops and tiny networks, for tests and smoke runs of the job.
* ``gpu``: the segmentation ``spleen`` training crop (96^3 at 1.5 x 1.5 x 2 mm), wider networks, a
  two-scale discriminator and more steps. Not measured here (no GPU was available).
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
    "hu_min",
    "hu_max",
    "organ_classes",
    "latent_channels",
    "generator_channels",
    "output_channels",
    "spade_channels",
    "discriminator_channels",
    "discriminator_layers",
    "discriminator_scales",
)


CROP_CENTRES = ("organ", "segmentation")


@dataclass(frozen=True)
class GanProfile:
    """Hyper-parameters of the label-conditioned 3D GAN (a CT crop generated for a given label map).

    Attributes:
        name: profile name (``get_gan_profile`` key).
        pixdim: voxel size in mm of the crops (the segmentation profile's, so pairs plug into its training).
        crop_size: edge of the cubic crop in voxels (the segmentation profile's training crop).
        generator_channels: channels of the generator's SPADE residual stages, from the smallest feature map
            (``crop_size / 2^len``) up; each stage is followed by a resize-convolution up-sampling.
        seg_profile: segmentation profile whose preprocessing (orientation, body crop) the real crops share.
        hu_min: HU mapped to 0 in the generated image (the GAN's own window, wider than segmentation's, so fat
            and cancellous bone keep their HU).
        hu_max: HU mapped to 1.
        organ_classes: organ labels ``1..N`` of the site's label images; the label map the generator is
            conditioned on has ``N + 2`` classes (outside the body, body, each organ).
        crop_centres: where training crops and new label maps are centred: ``"organ"`` (the organs' centre,
            shifted by up to ``crop_jitter`` voxels) or ``"segmentation"`` (a random organ or body voxel, in
            the segmentation profile's positive:negative ratio: ``dose3d_fl.gan.crops``).
        crop_jitter: largest random shift, in voxels, of a crop's centre from the organ's centre (``"organ"``).
        latent_channels: channels of the spatial noise the generator starts from.
        output_channels: channels of the full-resolution stage before the image is formed.
        spade_channels: hidden channels of each SPADE block's label-map convolutions (the full-resolution
            block uses half).
        discriminator_channels: channels of the patch discriminator's first layer (doubled per layer).
        discriminator_layers: down-sampling layers of the patch discriminator.
        discriminator_scales: 1: MONAI ``PatchDiscriminator``; more: ``MultiScalePatchDiscriminator``.
        adversarial_weight: weight of the least-squares patch adversarial loss in the generator's loss.
        l1_weight: weight of the L1 distance to the real image of the same label map.
        feature_matching_weight: weight of the discriminator feature-matching loss (L1 of its features).
        batch_size: crops per optimisation step.
        steps_per_epoch: generator steps in one local epoch.
        lr_generator: Adam learning rate of the generator.
        lr_discriminator: Adam learning rate of the discriminator.
        betas: Adam betas (both networks).
        metric_samples: synthetic crops drawn for the quality metrics.
        memorization_ncc: a sample whose best normalised cross-correlation with a training crop (image
            channel, over shifts of up to ``memorization_shift`` voxels beyond the crop jitter) reaches this
            is dropped as a copy.
        memorization_shift: shift tolerance of the memorisation check in voxels.
        volume_tolerance: an organ's volume in a new label map is plausible between ``min / tolerance`` and
            ``max * tolerance`` of its volumes in the site's real crops.
        deform_rotate: largest rotation (radians, each axis) of a new label map.
        deform_scale: largest relative scaling of a new label map.
        deform_sigma: smoothing (voxels) of the elastic displacement field.
        deform_magnitude: magnitude range of the elastic displacement (MONAI ``Rand3DElastic`` units).
        seed: random seed (initial weights, crops, noise).
    """

    name: str
    pixdim: tuple[float, float, float]
    crop_size: int
    generator_channels: tuple[int, ...]
    seg_profile: str = "cpu-small"
    hu_min: float = -250.0
    hu_max: float = 450.0
    organ_classes: int = 1
    crop_centres: str = "organ"
    crop_jitter: int = 8
    latent_channels: int = 8
    output_channels: int = 8
    spade_channels: int = 16
    discriminator_channels: int = 16
    discriminator_layers: int = 3
    discriminator_scales: int = 1
    adversarial_weight: float = 1.0
    l1_weight: float = 10.0
    feature_matching_weight: float = 10.0
    batch_size: int = 2
    steps_per_epoch: int = 20
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    metric_samples: int = 16
    memorization_ncc: float = 0.9
    memorization_shift: int = 3
    volume_tolerance: float = 1.5
    deform_rotate: float = 0.15
    deform_scale: float = 0.1
    deform_sigma: tuple[float, float] = (5.0, 7.0)
    deform_magnitude: tuple[float, float] = (50.0, 150.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.generator_channels:
            raise ValueError(f"GAN profile {self.name!r}: generator_channels needs at least one stage")
        if self.crop_size % self.upsampling != 0 or self.start_size < 2:
            raise ValueError(
                f"GAN profile {self.name!r}: crop_size {self.crop_size} must be a multiple of "
                f"2^{len(self.generator_channels)} = {self.upsampling} with a start size of at least 2"
            )
        if len(self.pixdim) != 3:
            raise ValueError(f"GAN profile {self.name!r}: pixdim needs three values (3D)")
        if not self.hu_min < self.hu_max:
            raise ValueError(
                f"GAN profile {self.name!r}: hu_min {self.hu_min} must be below hu_max {self.hu_max}"
            )
        if self.organ_classes < 1 or self.batch_size < 1 or self.discriminator_scales < 1:
            raise ValueError(
                f"GAN profile {self.name!r}: organ_classes, batch_size and discriminator_scales must be >= 1"
            )
        if self.crop_centres not in CROP_CENTRES:
            raise ValueError(
                f"GAN profile {self.name!r}: crop_centres {self.crop_centres!r} is not one of {', '.join(CROP_CENTRES)}"
            )
        if not 0 < self.memorization_ncc <= 1:
            raise ValueError(
                f"GAN profile {self.name!r}: memorization_ncc is a correlation threshold in (0, 1], "
                f"got {self.memorization_ncc}"
            )

    @property
    def upsampling(self) -> int:
        """Factor by which the generator enlarges its start feature map (2 per stage)."""
        return 2 ** len(self.generator_channels)

    @property
    def start_size(self) -> int:
        """Edge of the generator's first feature map (and of its noise)."""
        return self.crop_size // self.upsampling

    @property
    def label_classes(self) -> int:
        """Classes of the conditioning label map: outside the body, body, and each organ."""
        return self.organ_classes + 2

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
            ValueError: unknown keys (a profile written by another version) or invalid values.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"unknown GAN profile field(s): {', '.join(unknown)} (a model of another version of the GAN: "
                "retrain it with this version)"
            )
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
            crop_size=48,
            generator_channels=(64, 32, 16),
            output_channels=8,
            spade_channels=16,
            batch_size=2,
            steps_per_epoch=20,
        ),
        # A second design for the augmentation benchmark: crops and new label maps placed like the segmentation
        # trainer's positive and negative crops, so the organ lies anywhere in a synthetic pair, or not in it.
        GanProfile(
            name="cpu-small-posneg",
            pixdim=(4.0, 4.0, 4.0),
            crop_size=48,
            generator_channels=(64, 32, 16),
            crop_centres="segmentation",
            output_channels=8,
            spade_channels=16,
            batch_size=2,
            steps_per_epoch=20,
        ),
        # For tests and smoke runs of the job (seconds per round): 16^3 crops, tiny networks.
        GanProfile(
            name="cpu-tiny",
            pixdim=(4.0, 4.0, 4.0),
            crop_size=16,
            crop_jitter=1,
            generator_channels=(8, 4),
            latent_channels=2,
            output_channels=4,
            spade_channels=4,
            discriminator_channels=4,
            discriminator_layers=2,
            batch_size=2,
            steps_per_epoch=2,
            metric_samples=4,
            deform_sigma=(3.0, 4.0),
            deform_magnitude=(10.0, 30.0),
        ),
        GanProfile(
            name="gpu",
            seg_profile="spleen",
            pixdim=(1.5, 1.5, 2.0),
            crop_size=96,
            crop_jitter=16,
            generator_channels=(256, 128, 64, 32),
            latent_channels=16,
            output_channels=16,
            spade_channels=64,
            discriminator_channels=32,
            discriminator_layers=2,  # two scales: 2 and 4 layers (12 M parameters)
            discriminator_scales=2,
            batch_size=8,
            steps_per_epoch=100,
            metric_samples=32,
            memorization_shift=6,
            deform_sigma=(10.0, 14.0),
            deform_magnitude=(100.0, 300.0),
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
