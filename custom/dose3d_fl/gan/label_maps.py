"""Label maps the generator is conditioned on, and new ones drawn from a site's own training labels.

A label map is an integer volume with ``N + 2`` classes: 0 outside the body, 1 body, ``1 + k`` organ ``k``
(``k = 1..N``, the site's label values). The body is every voxel above the segmentation profile's body HU,
so it is available wherever a CT is. The generator sees the map one-hot (``one_hot``) at every scale.

``label_map_problem`` is the label check: every organ one 26-connected component with a plausible volume
(``OrganVolumeRange``). New maps are drawn by ``dose3d_fl.gan.label_sampler``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

OUTSIDE, BODY = 0, 1
# The 26-neighbourhood: an organ split only diagonally is still one organ.
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def build_label_map(body: torch.Tensor, organs: torch.Tensor) -> torch.Tensor:
    """The label map of a body mask and an organ label image (0 background, ``k`` organ ``k``)."""
    return torch.where(organs > 0, organs.long() + 1, body.long())


def organ_labels(label_maps: torch.Tensor) -> torch.Tensor:
    """The organ label image of label maps: 0 background (inside or outside the body), ``k`` organ ``k``."""
    return (label_maps.long() - 1).clamp(min=0)


def one_hot(label_maps: torch.Tensor, classes: int) -> torch.Tensor:
    """``(B, X, Y, Z)`` integer maps to ``(B, classes, X, Y, Z)`` float one-hot channels.

    Raises:
        ValueError: a value outside ``0 .. classes - 1`` (a label image with more organs than the profile).
    """
    maps = label_maps.long()
    if maps.numel() and (int(maps.min()) < 0 or int(maps.max()) >= classes):
        raise ValueError(
            f"label map values {int(maps.min())}..{int(maps.max())} do not fit {classes} classes (outside, body, "
            f"{classes - 2} organ(s)); set the GAN profile's organ_classes to the site's number of organs"
        )
    return torch.nn.functional.one_hot(maps, classes).movedim(-1, 1).float()


@dataclass(frozen=True)
class OrganVolumeRange:
    """Plausible volumes (voxels) of each organ in a crop: its range in the real crops, widened by
    ``tolerance`` each way.

    Attributes:
        low: smallest plausible volume per organ label.
        high: largest plausible volume per organ label.
    """

    low: dict[int, float]
    high: dict[int, float]

    @classmethod
    def from_label_maps(cls, label_maps: torch.Tensor, tolerance: float) -> OrganVolumeRange:
        """The range of each organ present in the real crops' maps ``(M, X, Y, Z)``."""
        organs = organ_labels(label_maps)
        low, high = {}, {}
        for organ in sorted(int(v) for v in torch.unique(organs) if v > 0):
            volumes = (organs == organ).flatten(1).sum(1).float()
            present = volumes[volumes > 0]
            low[organ] = float(present.min()) / tolerance
            high[organ] = float(present.max()) * tolerance
        return cls(low, high)


def label_map_problem(
    label_map: torch.Tensor, volumes: OrganVolumeRange, organs: Sequence[int] | None = None
) -> str | None:
    """Why a label map is implausible, or ``None``: each organ (``organs``, default every organ the map
    holds) must be one 26-connected component with a volume in the plausible range. A map without an organ
    (a crop beside the organs) has nothing to check."""
    labels = organ_labels(label_map).cpu().numpy()
    if organs is None:
        organs = [int(v) for v in np.unique(labels) if v > 0]
    for organ in organs:
        mask = labels == organ
        volume = int(mask.sum())
        if organ not in volumes.low:
            return f"organ {organ} is unknown to the site's crops"
        if not volumes.low[organ] <= volume <= volumes.high[organ]:
            return (
                f"organ {organ}: {volume} voxels, outside the plausible "
                f"{volumes.low[organ]:.0f}..{volumes.high[organ]:.0f}"
            )
        _, components = ndimage.label(mask, structure=CONNECTIVITY)
        if components != 1:
            return f"organ {organ}: {components} connected components, not one"
    return None


def label_map_is_plausible(label_map: torch.Tensor, volumes: OrganVolumeRange) -> bool:
    """Every organ of the map is one 26-connected component of plausible volume."""
    return label_map_problem(label_map, volumes) is None
