"""Segmentation profiles: every hyper-parameter and preprocessing choice of a model, by name.

A profile is serialised into each checkpoint (``SegProfile.to_dict``), so a model file knows how its input
must be resampled, windowed and cropped. Two profiles ship:

* ``cpu-small`` (default): a small UNet on 4 mm voxels and 48^3 crops (19 cm, most of the body's width),
  sized for 2 CPU cores: one case with two crops per step, about 0.15 s per step on one thread.
* ``spleen``: the MONAI spleen CT bundle's recipe (1.5 x 1.5 x 2.0 mm, 96^3 crops, 16..256-channel UNet),
  for GPU sites.

A profile also names the task's organs (TG-263 names, ``organs``; default the spleen alone): the network has
one output class per organ plus the background (``out_channels``). A job's ``organs`` argument replaces them
(``profile.replace(organs=...)``); the single-spleen task is the one-organ case of the same code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dose3d_fl.data.tg263 import check_organs

LOSSES = ("dice_ce", "dice")
LR_SCHEDULES = ("constant", "cosine")
# Fields that change the network's tensors or what its input means: two profiles that differ in one of
# them cannot share weights.
MODEL_FIELDS = (
    "pixdim",
    "hu_min",
    "hu_max",
    "body_hu",
    "channels",
    "strides",
    "num_res_units",
    "norm",
    "organs",
    "out_channels",
)
# The organ list of a profile that names none: every checkpoint written before profiles named their organs
# segments the spleen alone (two output classes).
DEFAULT_ORGANS = ("Spleen",)
NORMS = ("batch", "instance")


T = TypeVar("T")


@dataclass(frozen=True)
class SegProfile:
    """Hyper-parameters and preprocessing of a 3D segmentation model.

    Attributes:
        name: profile name (``get_profile`` key).
        pixdim: voxel size in mm (RAS axes) the volumes are resampled to, for training and inference.
        hu_min: HU mapped to 0 (lower edge of the intensity window, values below are clipped).
        hu_max: HU mapped to 1 (upper edge, values above are clipped).
        body_hu: voxels above this HU count as body; the volume is cropped to their bounding box.
        roi_size: training crop and sliding-window size in voxels.
        channels: UNet feature channels per level.
        strides: UNet down-sampling strides between levels (one fewer than ``channels``).
        num_res_units: residual units per UNet block.
        norm: ``"batch"`` or ``"instance"`` normalisation.
        dropout: UNet dropout probability.
        organs: the task's organs, TG-263 names (``dose3d_fl.data.tg263.check_organs``) in label order:
            organ ``i`` is class ``i + 1``; the network's ``out_channels`` is ``1 + len(organs)``.
        batch_size: cases per optimisation step.
        num_samples: random crops per case per step (the network sees ``batch_size * num_samples`` crops).
        pos_neg: relative frequency of crops centred on the label vs. on background.
        cache_crop_indices: keep each training case's label and background voxel indices with its cached
            volumes (MONAI's ``FgBgToIndicesd``), so a random crop does not search the label at every step;
            8 bytes per body voxel (cpu-small: about 1 MiB per case; spleen, whose voxels are 14 times
            smaller, about 14 MiB).
        lr: Adam learning rate (at the start of training).
        lr_schedule: ``"constant"``, or ``"cosine"``: ``lr`` decays along half a cosine to
            ``lr * min_lr_ratio`` at the end of training (the last epoch centrally, the last round in a
            federation).
        min_lr_ratio: final learning rate as a share of ``lr`` (cosine schedule).
        weight_decay: Adam weight decay.
        loss: ``"dice_ce"`` (Dice + cross-entropy) or ``"dice"``.
        intensity_shift: random intensity shift range (window units, 1.0 = ``hu_max - hu_min``); covers the
            sites' HU calibration offsets.
        intensity_scale: random intensity scale range (a factor ``1 +- intensity_scale``).
        noise_std: largest standard deviation of the random Gaussian noise (window units).
        aug_prob: probability of each random intensity transform.
        flip_axes: RAS axes randomly flipped; never axis 0 (left/right), the spleen is on the left.
        keep_largest_component: keep only the largest connected component of each predicted class (one
            organ, one component: removes scattered false positives).
        sw_batch_size: windows per forward pass in sliding-window inference.
        sw_overlap: sliding-window overlap.
        val_interval: epochs between validations when training for several epochs.
        amp: mixed precision (used on CUDA only).
        seed: random seed (``monai.utils.set_determinism``).
    """

    name: str
    pixdim: tuple[float, float, float]
    hu_min: float
    hu_max: float
    roi_size: tuple[int, int, int]
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int = 2
    norm: str = "batch"
    dropout: float = 0.0
    organs: tuple[str, ...] = DEFAULT_ORGANS
    body_hu: float = -500.0
    batch_size: int = 2
    num_samples: int = 4
    pos_neg: tuple[float, float] = (1.0, 1.0)
    cache_crop_indices: bool = True
    lr: float = 1e-4
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    loss: str = "dice_ce"
    intensity_shift: float = 0.05
    intensity_scale: float = 0.1
    noise_std: float = 0.0
    aug_prob: float = 0.5
    flip_axes: tuple[int, ...] = field(default_factory=tuple)
    keep_largest_component: bool = False
    sw_batch_size: int = 4
    sw_overlap: float = 0.5
    val_interval: int = 1
    amp: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "organs", check_organs(tuple(self.organs)))
        except ValueError as err:
            raise ValueError(f"profile {self.name!r}: {err}") from None
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"profile {self.name!r}: {len(self.channels)} channel levels need {len(self.channels) - 1} "
                f"strides, got {len(self.strides)}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"profile {self.name!r}: loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"profile {self.name!r}: lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"profile {self.name!r}: norm {self.norm!r} is not one of {', '.join(NORMS)}")
        if 0 in self.flip_axes:
            raise ValueError(
                f"profile {self.name!r}: flipping axis 0 swaps the patient's left and right (the spleen is "
                "on the left); flip only axes 1 and 2"
            )
        if not self.hu_min < self.hu_max:
            raise ValueError(
                f"profile {self.name!r}: hu_min {self.hu_min} must be below hu_max {self.hu_max}"
            )
        if len(self.pixdim) != 3 or len(self.roi_size) != 3:
            raise ValueError(f"profile {self.name!r}: pixdim and roi_size need three values (3D)")

    @property
    def out_channels(self) -> int:
        """Output classes of the network: the background and one per organ."""
        return 1 + len(self.organs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (tuples become lists), with ``out_channels`` for readers of the
        network's shape."""
        return {
            **{
                key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()
            },
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegProfile:
        """Inverse of ``to_dict``. A profile without ``organs`` (written before profiles named them) is the
        spleen task, and its ``out_channels`` must say 2.

        Raises:
            ValueError: unknown keys (a profile written by a newer version), invalid values, or an
                ``out_channels`` that does not fit the organs.
        """
        data = dict(data)
        channels = data.pop("out_channels", None)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown segmentation profile field(s): {', '.join(unknown)}")
        profile = cls(
            **{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        )
        if channels is not None and channels != profile.out_channels:
            named = (
                "names no organs (the spleen alone)" if "organs" not in data else f"names {profile.organs}"
            )
            raise ValueError(
                f"segmentation profile {profile.name!r} has out_channels {channels} but {named}, which needs "
                f"{profile.out_channels}; the model file is damaged or from another program"
            )
        return profile

    def incompatibilities(self, other: SegProfile) -> list[str]:
        """Names of the ``MODEL_FIELDS`` in which two profiles differ (empty: they can share weights)."""
        return [name for name in MODEL_FIELDS if getattr(self, name) != getattr(other, name)]

    def learning_rate(self, progress: float) -> float:
        """The scheduled learning rate at ``progress`` (0: start of training, 1: end; clipped to [0, 1])."""
        if self.lr_schedule == "constant":
            return self.lr
        progress = min(max(progress, 0.0), 1.0)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def replace(self, **changes: Any) -> SegProfile:
        """A copy with some fields changed (e.g. ``profile.replace(seed=1)``)."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, SegProfile] = {
    profile.name: profile
    for profile in (
        SegProfile(
            name="cpu-small",
            pixdim=(4.0, 4.0, 4.0),
            hu_min=-57.0,
            hu_max=164.0,
            roi_size=(48, 48, 48),
            channels=(8, 16, 32, 64),
            strides=(2, 2, 2),
            num_res_units=1,
            norm="batch",
            batch_size=1,
            num_samples=2,
            lr=2e-3,
            lr_schedule="cosine",
            min_lr_ratio=0.05,
            loss="dice_ce",
            intensity_shift=0.05,
            intensity_scale=0.1,
            noise_std=0.02,
            keep_largest_component=True,
            sw_batch_size=4,
            sw_overlap=0.25,
            val_interval=5,
        ),
    )
}
# Differential privacy needs a network without BatchNorm running statistics (as opacus demands): they are
# data-dependent, must be noised with the update, and their scale (hundreds) dwarfs the weights' (0.01).
PROFILES["cpu-small-dp"] = PROFILES["cpu-small"].replace(name="cpu-small-dp", norm="instance")
# For orchestration measurements with many simulated sites on one machine (``bench.scaling``): a network and
# crops small enough that 32 site processes fit in 24 GB. It does not learn anything useful.
PROFILES["cpu-tiny"] = PROFILES["cpu-small"].replace(
    name="cpu-tiny", roi_size=(24, 24, 24), channels=(4, 8, 16), strides=(2, 2), sw_batch_size=1
)
PROFILES |= {
    profile.name: profile
    for profile in (
        SegProfile(
            name="spleen",
            pixdim=(1.5, 1.5, 2.0),
            hu_min=-57.0,
            hu_max=164.0,
            roi_size=(96, 96, 96),
            channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm="batch",
            batch_size=2,
            num_samples=4,
            lr=1e-4,
            loss="dice_ce",
            sw_batch_size=4,
            sw_overlap=0.5,
            val_interval=2,
        ),
    )
}
# The organs at risk at clinical resolution, for a site with a GPU: the spleen profile's network and crops at
# 1.5 mm isotropic voxels, the soft-tissue window of MONAI's multi-organ (BTCV) tutorial, the largest component
# of each organ kept, sliding-window inference over the whole CT.
PROFILES["organs-gpu"] = PROFILES["spleen"].replace(
    name="organs-gpu",
    pixdim=(1.5, 1.5, 1.5),
    hu_min=-175.0,
    hu_max=250.0,
    keep_largest_component=True,
    organs=("Spleen", "Liver", "Kidney_L", "Kidney_R", "Stomach", "Pancreas", "A_Aorta"),
)
DEFAULT_PROFILE = "cpu-small"


def get_profile(
    name: str = DEFAULT_PROFILE, organs: Sequence[str] | None = None, seed: int | None = None
) -> SegProfile:
    """The named profile, with a task's organs and a training seed in place of its own.

    Args:
        name: the profile's name.
        organs: TG-263 names in label order (None or empty: the profile's).
        seed: training seed (None: the profile's).

    Raises:
        ValueError: no profile of that name (the message lists the known ones), or organs it refuses.
    """
    profile = named_profile(PROFILES, name, "segmentation")
    if organs:
        profile = profile.replace(organs=tuple(organs))
    return profile if seed is None else profile.replace(seed=seed)


def named_profile(registry: Mapping[str, T], name: str, kind: str) -> T:
    """``registry[name]``, or a ValueError that lists the ``kind`` profiles there are."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} profile {name!r}; choose one of {', '.join(registry)}") from None
