"""MONAI transforms of a segmentation profile, after the MONAI spleen CT recipe.

The deterministic part (load, RAS orientation, resampling, body crop, HU window, padding) is kept apart
from the random part (positive/negative crops, intensity augmentation) so that ``CacheDataset`` runs the
deterministic part once per case. Validation and inference use the deterministic part only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    FgBgToIndicesd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from dose3d_fl.data.cases import IMAGE, LABEL, LABEL_VALUES, case_id
from dose3d_fl.seg.profiles import SegProfile

# Where ``crop_index_transforms`` keeps a training case's label / background voxel indices.
FG_INDICES, BG_INDICES = f"{LABEL}_fg_indices", f"{LABEL}_bg_indices"
# NIfTI world axes (nibabel convention): "R" means the first axis increases towards the patient's right.
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class AboveHU:
    """Foreground selector for ``CropForegroundd``: voxels above a HU value (the body, not the air)."""

    hu: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image > self.hu


class TaskLabelValuesd(MapTransform):
    """Rewrite a loaded label from its cache's organ order to the task's (``dose3d_fl.data.cases``).

    A case that carries ``organ_values`` (the task's value for each cache value) has its label mapped and
    the entry removed; a case without it is already in the task's order and passes unchanged. Deterministic:
    cached with the case.
    """

    def __init__(self) -> None:
        super().__init__(keys=LABEL, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        values = data.get(LABEL_VALUES)
        if values is None or LABEL not in data:
            return dict(data)
        out = dict(data)
        del out[LABEL_VALUES]
        label = out[LABEL]
        lookup = torch.as_tensor(values, dtype=torch.long)
        classes = torch.as_tensor(label).round().long()
        if classes.min() < 0 or classes.max() >= len(lookup):
            raise ValueError(
                f"case {case_id(dict(data))}: label values {int(classes.min())}..{int(classes.max())} exceed the "
                f"cache's {len(lookup) - 1} organs; re-run `dose3d ingest` for this site"
            )
        mapped = label.clone()
        mapped[...] = lookup[classes].to(label.dtype)
        out[LABEL] = mapped
        return out


def preprocessing_transforms(
    profile: SegProfile, keys: tuple[str, ...] = (IMAGE, LABEL)
) -> list[MapTransform]:
    """The deterministic part: from NIfTI paths to windowed RAS volumes on the profile's grid.

    The body crop is taken on the HU image before windowing (the window's lower edge, -57 HU in the spleen
    recipe, lies above fat, so the windowed image no longer outlines the body). A label is read in the task's
    organ order (:class:`TaskLabelValuesd`).

    Args:
        profile: the segmentation profile.
        keys: dictionary keys to load; ``("image",)`` for inference without a label.
    """
    modes = tuple("nearest" if key == LABEL else "bilinear" for key in keys)
    return [
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        *([TaskLabelValuesd()] if LABEL in keys else []),
        Orientationd(keys=keys, axcodes="RAS", labels=RAS_LABELS),
        Spacingd(keys=keys, pixdim=profile.pixdim, mode=modes),
        CropForegroundd(keys=keys, source_key=IMAGE, select_fn=AboveHU(profile.body_hu), allow_smaller=True),
        ScaleIntensityRanged(
            keys=IMAGE, a_min=profile.hu_min, a_max=profile.hu_max, b_min=0.0, b_max=1.0, clip=True
        ),
        SpatialPadd(keys=keys, spatial_size=profile.roi_size),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=True),
    ]


def crop_index_transforms(profile: SegProfile) -> list[MapTransform]:
    """The label and background voxel indices the random crops draw their centres from, when the profile
    caches them (``cache_crop_indices``): deterministic, so ``CacheDataset`` keeps them with the volumes.

    Without them ``RandCropByPosNegLabeld`` searches the whole label for every crop: about a third of the
    random part's time on the cpu-small demo cases. The crops are the same either way.
    """
    if not profile.cache_crop_indices:
        return []
    return [FgBgToIndicesd(keys=LABEL, image_key=IMAGE, image_threshold=0.0)]


def augmentation_transforms(profile: SegProfile) -> list[MapTransform]:
    """The random part: ``num_samples`` positive/negative crops per case, then intensity augmentation.

    With ``profile.cache_crop_indices`` the crops take their centres from the indices of
    ``crop_index_transforms``, which must run before.

    The intensity shift, scale and noise cover the sites' HU calibration offsets and noise levels. No
    left/right flip: the spleen lies on the patient's left, and a mirrored patient is not anatomy.
    """
    pos, neg = profile.pos_neg
    keys = (IMAGE, LABEL)
    transforms: list[MapTransform] = [
        RandCropByPosNegLabeld(
            keys=keys,
            label_key=LABEL,
            spatial_size=profile.roi_size,
            pos=pos,
            neg=neg,
            num_samples=profile.num_samples,
            image_key=IMAGE,
            image_threshold=0.0,
            fg_indices_key=FG_INDICES if profile.cache_crop_indices else None,
            bg_indices_key=BG_INDICES if profile.cache_crop_indices else None,
        )
    ]
    transforms += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in profile.flip_axes]
    if profile.intensity_scale > 0:
        transforms.append(
            RandScaleIntensityd(keys=IMAGE, factors=profile.intensity_scale, prob=profile.aug_prob)
        )
    if profile.intensity_shift > 0:
        transforms.append(
            RandShiftIntensityd(keys=IMAGE, offsets=profile.intensity_shift, prob=profile.aug_prob)
        )
    if profile.noise_std > 0:
        transforms.append(RandGaussianNoised(keys=IMAGE, std=profile.noise_std, prob=profile.aug_prob))
    return transforms


def train_transforms(profile: SegProfile) -> Compose:
    """Deterministic then random transforms; ``CacheDataset`` caches up to the first random one."""
    return Compose(
        [
            *preprocessing_transforms(profile),
            *crop_index_transforms(profile),
            *augmentation_transforms(profile),
        ]
    )


def eval_transforms(profile: SegProfile, with_label: bool = True) -> Compose:
    """The deterministic part only, for validation (``with_label``) and inference."""
    return Compose(preprocessing_transforms(profile, (IMAGE, LABEL) if with_label else (IMAGE,)))
