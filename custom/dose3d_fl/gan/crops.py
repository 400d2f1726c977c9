"""Real crops around the organs, from a site's cached cases: CT in the GAN's HU window and the label map.

Each case goes through the segmentation preprocessing (``dose3d_fl.seg.transforms.eval_transforms``: RAS,
resampling to the GAN profile's voxel size, body crop, padding to the training crop) once, with its
intensity window opened to [-1000, ``hu_max``] HU so the body (above the segmentation profile's body HU) can
be told from the air. The image is then put in the GAN's window ``[hu_min, hu_max]`` -> [0, 1] and the label
map built (``dose3d_fl.gan.label_maps``). Crops of ``crop_size^3`` are cut around the organs' centre,
shifted by up to ``crop_jitter`` voxels; a crop pair is ``(2, S, S, S)``: channel 0 the image, channel 1
the label map (as float).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dose3d_fl.data.cases import IMAGE, LABEL, Case, case_id
from dose3d_fl.gan.label_maps import build_label_map
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.transforms import eval_transforms

log = logging.getLogger(__name__)

AIR_HU = -1000.0


@dataclass
class OrganVolume:
    """One preprocessed case: image in the GAN window and label map, both ``(X, Y, Z)``, and the organs'
    centre voxel."""

    case: str
    image: torch.Tensor
    label_map: torch.Tensor
    centre: tuple[int, int, int]


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
        volumes.append(OrganVolume(case_id(case), hu_to_window(hu, profile), label_map, centre))
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


def cut_crop(volume: OrganVolume, size: int, shift: Sequence[int] = (0, 0, 0)) -> torch.Tensor:
    """The ``(2, size, size, size)`` pair (image, label map) centred on the organs plus ``shift``."""
    pair = torch.stack([volume.image, volume.label_map.float()])
    return cut_region(pair, volume.centre, size, shift)


class CropSampler:
    """Random training crops: a random case, a random shift of up to ``crop_jitter`` voxels per axis.

    Args:
        volumes: the preprocessed cases.
        profile: crop size and jitter.
        seed: seed of the crop positions.
    """

    def __init__(self, volumes: Sequence[OrganVolume], profile: GanProfile, seed: int) -> None:
        self.volumes = list(volumes)
        self.size = profile.crop_size
        self.jitter = profile.crop_jitter
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> torch.Tensor:
        """``(n, 2, S, S, S)`` crops."""
        crops = []
        for index in self.rng.integers(len(self.volumes), size=n):
            shift = self.rng.integers(-self.jitter, self.jitter + 1, size=3)
            crops.append(cut_crop(self.volumes[index], self.size, shift))
        return torch.stack(crops)


def reference_crops(volumes: Sequence[OrganVolume], profile: GanProfile, per_case: int = 8) -> torch.Tensor:
    """The centred crop of every case plus ``per_case`` seeded shifted ones: what samples are compared with
    by the quality metrics."""
    crops = [cut_crop(volume, profile.crop_size) for volume in volumes]
    sampler = CropSampler(volumes, profile, seed=profile.seed + 1)
    if per_case > 0:
        crops += list(sampler.sample(per_case * len(volumes)))
    return torch.stack(crops)


def memorization_regions(volumes: Sequence[OrganVolume], profile: GanProfile) -> torch.Tensor:
    """Each case's image around its organs, large enough to hold every training crop (any jitter) shifted
    by up to ``memorization_shift`` voxels more: ``(cases, R, R, R)``, ``R = S + 2 (jitter + shift)``."""
    size = profile.crop_size + 2 * (profile.crop_jitter + profile.memorization_shift)
    return torch.stack([cut_region(volume.image, volume.centre, size) for volume in volumes])
