"""Real crop pairs around the organ, from a site's cached cases.

Each case goes through the segmentation preprocessing (``dose3d_fl.seg.transforms.eval_transforms``: RAS,
resampling, body crop, HU window to [0, 1]) on the GAN profile's voxel size, once; crops of
``crop_size^3`` are then cut around the organ's centre, shifted by up to ``crop_jitter`` voxels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dose3d_fl.data.cases import IMAGE, LABEL, Case, case_id
from dose3d_fl.gan.profiles import GanProfile
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.transforms import eval_transforms

log = logging.getLogger(__name__)


@dataclass
class OrganVolume:
    """One preprocessed case: windowed CT and organ mask ``(X, Y, Z)`` and the organ's centre voxel."""

    case: str
    image: torch.Tensor
    label: torch.Tensor
    centre: tuple[int, int, int]


def load_organ_volumes(cases: Sequence[Case], profile: GanProfile) -> list[OrganVolume]:
    """Preprocess the cases on the profile's grid; cases without an organ voxel are skipped with a warning.

    Raises:
        ValueError: no case holds the organ (nothing to learn from).
    """
    seg_profile = get_profile(profile.seg_profile).replace(pixdim=profile.pixdim)
    transform = eval_transforms(seg_profile)
    volumes = []
    for case in cases:
        data = transform({IMAGE: case[IMAGE], LABEL: case[LABEL]})
        image = torch.as_tensor(data[IMAGE])[0].float()
        label = (torch.as_tensor(data[LABEL])[0] > 0.5).float()
        voxels = torch.nonzero(label)
        if len(voxels) == 0:
            log.warning("case %s: no organ voxel after resampling; not used for the GAN", case_id(case))
            continue
        centre = tuple(int(v) for v in voxels.float().mean(0).round())
        volumes.append(OrganVolume(case_id(case), image, label, centre))
    if not volumes:
        raise ValueError(
            f"none of the {len(cases)} case(s) holds an organ voxel on the {profile.pixdim} mm grid; "
            "check the cache's labels (dose3d summary CACHE)"
        )
    return volumes


def cut_crop(volume: OrganVolume, size: int, shift: Sequence[int] = (0, 0, 0)) -> torch.Tensor:
    """The ``(2, size, size, size)`` pair (image, mask) centred on the organ plus ``shift``; parts outside the
    volume are filled with 0 (the bottom of the HU window, and background)."""
    pair = torch.stack([volume.image, volume.label])
    out = torch.zeros((2, size, size, size), dtype=pair.dtype)
    src, dst = [], []
    for axis, (centre, offset) in enumerate(zip(volume.centre, shift, strict=True)):
        start = centre + int(offset) - size // 2
        lo, hi = max(start, 0), min(start + size, pair.shape[axis + 1])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(slice(None), *dst)] = pair[(slice(None), *src)]
    return out


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
    """The centred crop of every case plus ``per_case`` seeded shifted ones: what a sample is compared with
    by the quality metrics and the memorization filter."""
    crops = [cut_crop(volume, profile.crop_size) for volume in volumes]
    sampler = CropSampler(volumes, profile, seed=profile.seed + 1)
    if per_case > 0:
        crops += list(sampler.sample(per_case * len(volumes)))
    return torch.stack(crops)
