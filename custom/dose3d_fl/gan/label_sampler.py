"""New plausible label maps from a site's own training label maps.

A new map is a training case's label map cut where the profile places crops (``dose3d_fl.gan.crops``), then
rotated, scaled
and elastically deformed by MONAI's ``Rand3DElastic`` with nearest-neighbour interpolation (so it stays a map
of the same classes). It is kept only when every organ of its source crop is still one 26-connected
component with a plausible volume (``dose3d_fl.gan.label_maps.label_map_problem``): every label a synthetic
pair carries passes the label check by construction.

The new maps are deformations of the site's own delineations, not new anatomy: they never leave the site
except inside synthetic pairs that a person exports (``dose3d gan export``, docs/gan.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Rand3DElastic
from monai.utils import convert_to_tensor

from dose3d_fl.gan.crops import OrganVolume, crop_centre, cut_region
from dose3d_fl.gan.label_maps import OrganVolumeRange, label_map_problem, organ_labels
from dose3d_fl.gan.profiles import GanProfile


class LabelMapSampler:
    """New plausible label maps from a site's own training label maps (random shift, rotation, scaling and
    elastic deformation with nearest-neighbour interpolation, then the one-component and volume check).

    Args:
        sources: the site's preprocessed training cases (their label maps and organ centres).
        profile: crop size, jitter, deformation ranges and volume tolerance.
        volume_range: the plausible organ volumes (from the site's real crops).
        seed: seed of the draws.
        max_tries: deformations tried per map before giving up.
        size: edge of the maps in voxels (default the profile's training crop; larger maps give the
            segmentation trainer room for its own random crops).
    """

    def __init__(
        self,
        sources: Sequence[OrganVolume],
        profile: GanProfile,
        volume_range: OrganVolumeRange,
        seed: int,
        max_tries: int = 50,
        size: int | None = None,
    ) -> None:
        if not sources:
            raise ValueError("no training label map to draw new label maps from")
        self.sources = list(sources)
        self.profile = profile
        self.volume_range = volume_range
        self.max_tries = max_tries
        self.rng = np.random.default_rng(seed)
        self.size = size = size or profile.crop_size
        self.margin = size // 4  # room for rotation and deformation around the crop
        self.deform = Rand3DElastic(
            sigma_range=profile.deform_sigma,
            magnitude_range=profile.deform_magnitude,
            prob=1.0,
            rotate_range=(profile.deform_rotate,) * 3,
            scale_range=(profile.deform_scale,) * 3,
            spatial_size=(size, size, size),
            mode="nearest",
            padding_mode="border",
        )
        self.deform.set_random_state(seed=seed)

    def _region(self, index: int) -> torch.Tensor:
        source = self.sources[index]
        centre = crop_centre(source, self.profile, self.rng)
        return cut_region(source.label_map, centre, self.size + 2 * self.margin)

    def sample(self, n: int) -> torch.Tensor:
        """``(n, S, S, S)`` new label maps (int64), each passing ``label_map_problem``.

        Raises:
            ValueError: no plausible map after ``max_tries`` deformations of a source (the deformation
                ranges are too strong for this site's organs).
        """
        maps = []
        for index in self.rng.integers(len(self.sources), size=n):
            last = None
            for _ in range(self.max_tries):
                region = self._region(int(index))
                m, size = self.margin, self.size
                centre = region[m : m + size, m : m + size, m : m + size]
                present = [int(v) for v in torch.unique(organ_labels(centre)) if v > 0]
                deformed = (
                    convert_to_tensor(self.deform(region[None].float()), track_meta=False)[0].round().long()
                )
                # The organs of the crop before and after the deformation: one that came in at the edge
                # must be plausible too, so every map passes the label check as it is written.
                after = [int(v) for v in torch.unique(organ_labels(deformed)) if v > 0]
                last = label_map_problem(deformed, self.volume_range, sorted(set(present) | set(after)))
                if last is None:
                    maps.append(deformed)
                    break
            else:
                raise ValueError(
                    f"no plausible label map in {self.max_tries} deformations of training case "
                    f"{self.sources[index].case} (last: {last}); lower the GAN profile's deform_* ranges"
                )
        size = self.size
        return torch.stack(maps) if maps else torch.empty((0, size, size, size), dtype=torch.long)
