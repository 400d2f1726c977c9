"""Real crops around the organs, from a site's cached cases: CT in the GAN's HU window and the label map.

Each case goes through the segmentation preprocessing (``dose3d_fl.seg.transforms.eval_transforms``: RAS,
resampling to the GAN profile's voxel size, body crop, padding to the training crop) once, with its
intensity window opened to [-1000, ``hu_max``] HU so the body (above the segmentation profile's body HU) can
be told from the air. The image is then put in the GAN's window ``[hu_min, hu_max]`` -> [0, 1] and the label
map built (``dose3d_fl.gan.label_maps``). A crop pair is ``(2, S, S, S)``: channel 0 the image, channel 1
the label map (as float). Where crops are centred is the profile's ``crop_centres``:

* ``"organ"``: on the organs' centre, shifted by up to ``crop_jitter`` voxels per axis (every crop holds
  the organ near its middle);
* ``"segmentation"``: like the segmentation trainer's ``RandCropByPosNegLabeld``: on a random organ voxel
  (positive) or on a random body voxel outside the organs above the segmentation window's lower edge
  (negative), in the segmentation profile's positive:negative ratio. The organ is then anywhere in a
  crop, or not in it at all, as in the crops the segmentation network trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dose3d_fl.data.cases import IMAGE, LABEL, Case, case_id
from dose3d_fl.gan.label_maps import BODY, build_label_map
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.transforms import eval_transforms

log = logging.getLogger(__name__)

AIR_HU = -1000.0


@dataclass
class OrganVolume:
    """One preprocessed case: image in the GAN window and label map, both ``(X, Y, Z)``, the organs' centre
    voxel, and the voxels positive and negative crops are centred on (``(K, 3)`` indices)."""

    case: str
    image: torch.Tensor
    label_map: torch.Tensor
    centre: tuple[int, int, int]
    organ_voxels: torch.Tensor
    background_voxels: torch.Tensor


def hu_to_window(hu: torch.Tensor, profile: GanProfile) -> torch.Tensor:
    """HU to the GAN's window units ([0, 1], clipped)."""
    return ((hu - profile.hu_min) / (profile.hu_max - profile.hu_min)).clamp(0.0, 1.0)


def window_to_hu(image: torch.Tensor | np.ndarray, profile: GanProfile) -> torch.Tensor | np.ndarray:
    """The GAN's window units back to HU."""
    return image * (profile.hu_max - profile.hu_min) + profile.hu_min


def load_organ_volumes(cases: Sequence[Case], profile: GanProfile) -> list[OrganVolume]:
    """Preprocess the cases on the profile's grid; cases without an organ voxel are skipped with a warning.

    Raises:
        ValueError: no case holds an organ (nothing to learn from), or a label value above the profile's
            ``organ_classes``.
    """
    seg = get_profile(profile.seg_profile)
    wide = seg.replace(pixdim=profile.pixdim, hu_min=AIR_HU, hu_max=profile.hu_max)
    transform = eval_transforms(wide)
    volumes = []
    for case in cases:
        data = transform({IMAGE: case[IMAGE], LABEL: case[LABEL]})
        hu = torch.as_tensor(data[IMAGE])[0].float() * (profile.hu_max - AIR_HU) + AIR_HU
        organs = torch.as_tensor(data[LABEL])[0].round().long()
        if int(organs.max()) > profile.organ_classes:
            raise ValueError(
                f"case {case_id(case)}: label value {int(organs.max())} but the GAN profile has "
                f"{profile.organ_classes} organ class(es); use a profile with organ_classes >= {int(organs.max())}"
            )
        voxels = torch.nonzero(organs > 0)
        if len(voxels) == 0:
            log.warning("case %s: no organ voxel after resampling; not used for the GAN", case_id(case))
            continue
        centre = tuple(int(v) for v in voxels.float().mean(0).round())
        label_map = build_label_map(hu > seg.body_hu, organs)
        background = torch.nonzero((label_map == BODY) & (hu > seg.hu_min)).int()
        image = hu_to_window(hu, profile)
        volumes.append(OrganVolume(case_id(case), image, label_map, centre, voxels.int(), background))
    if not volumes:
        raise ValueError(
            f"none of the {len(cases)} case(s) holds an organ voxel on the {profile.pixdim} mm grid; "
            "check the cache's labels (dose3d summary CACHE)"
        )
    return volumes


def cut_region(
    volume: torch.Tensor, centre: Sequence[int], size: int, shift: Sequence[int] = (0, 0, 0)
) -> torch.Tensor:
    """The ``size^3`` cube of ``volume`` (``(X, Y, Z)``, or ``(C, X, Y, Z)``) centred on ``centre + shift``;
    parts outside the volume are 0 (the bottom of the window; outside the body)."""
    spatial = volume.shape[-3:]
    out = torch.zeros((*volume.shape[:-3], size, size, size), dtype=volume.dtype)
    src, dst = [], []
    for axis, (c, offset) in enumerate(zip(centre, shift, strict=True)):
        start = int(c) + int(offset) - size // 2
        lo, hi = max(start, 0), min(start + size, spatial[axis])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(..., *dst)] = volume[(..., *src)]
    return out


def cut_crop(
    volume: OrganVolume, size: int, shift: Sequence[int] = (0, 0, 0), centre: Sequence[int] | None = None
) -> torch.Tensor:
    """The ``(2, size, size, size)`` pair (image, label map) centred on ``centre`` (default the organs'
    centre) plus ``shift``."""
    pair = torch.stack([volume.image, volume.label_map.float()])
    return cut_region(pair, volume.centre if centre is None else centre, size, shift)


def negative_share(profile: GanProfile) -> float:
    """The share of negative crops in ``"segmentation"`` placement: the segmentation profile's ratio."""
    positive, negative = get_profile(profile.seg_profile).pos_neg
    return negative / (positive + negative)


def crop_centre(volume: OrganVolume, profile: GanProfile, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random crop centre in ``volume`` by the profile's ``crop_centres`` (module docstring)."""
    if profile.crop_centres == "organ":
        shift = rng.integers(-profile.crop_jitter, profile.crop_jitter + 1, size=3)
        return tuple(int(c + s) for c, s in zip(volume.centre, shift, strict=True))
    negative = rng.random() < negative_share(profile) and len(volume.background_voxels) > 0
    voxels = volume.background_voxels if negative else volume.organ_voxels
    return tuple(int(v) for v in voxels[int(rng.integers(len(voxels)))])


class CropSampler:
    """Random training crops: a random case, a random centre by the profile's ``crop_centres``.

    Args:
        volumes: the preprocessed cases.
        profile: crop size and placement.
        seed: seed of the crop positions.
    """

    def __init__(self, volumes: Sequence[OrganVolume], profile: GanProfile, seed: int) -> None:
        self.volumes = list(volumes)
        self.profile = profile
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> torch.Tensor:
        """``(n, 2, S, S, S)`` crops."""
        crops = []
        for index in self.rng.integers(len(self.volumes), size=n):
            volume = self.volumes[index]
            centre = crop_centre(volume, self.profile, self.rng)
            crops.append(cut_crop(volume, self.profile.crop_size, centre=centre))
        return torch.stack(crops)


def reference_crops(volumes: Sequence[OrganVolume], profile: GanProfile, per_case: int = 8) -> torch.Tensor:
    """The centred crop of every case plus ``per_case`` seeded shifted ones: what samples are compared with
    by the quality metrics."""
    crops = [cut_crop(volume, profile.crop_size) for volume in volumes]
    sampler = CropSampler(volumes, profile, seed=profile.seed + 1)
    if per_case > 0:
        crops += list(sampler.sample(per_case * len(volumes)))
    return torch.stack(crops)


def memorization_regions(
    volumes: Sequence[OrganVolume], profile: GanProfile, sample_size: int | None = None
) -> list[torch.Tensor]:
    """Each case's image where training crops come from, large enough to hold every crop the GAN trained on
    shifted by up to ``memorization_shift`` voxels more, for samples of ``sample_size`` voxels (default the
    training crop): ``"organ"`` placement, the ``R^3`` cube around the organs (``R = S + 2 (jitter +
    shift)``); ``"segmentation"``, the whole volume with ``S / 2 + shift`` voxels of 0 around it."""
    size = sample_size or profile.crop_size
    if profile.crop_centres == "organ":
        extent = size + 2 * (profile.crop_jitter + profile.memorization_shift)
        return [cut_region(volume.image, volume.centre, extent) for volume in volumes]
    pad = size // 2 + profile.memorization_shift
    return [torch.nn.functional.pad(volume.image, [pad] * 6) for volume in volumes]
