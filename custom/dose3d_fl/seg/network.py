"""The segmentation network of a profile."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from dose3d_fl.seg.profiles import SegProfile


def network_args(profile: SegProfile) -> dict[str, Any]:
    """JSON-serialisable keyword arguments of ``monai.networks.nets.UNet`` for a profile.

    Input: one channel (the windowed CT); output: ``profile.out_channels`` logits per voxel. A job
    definition can name the class and these arguments instead of pickling a module.
    """
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": profile.out_channels,
        "channels": list(profile.channels),
        "strides": list(profile.strides),
        "num_res_units": profile.num_res_units,
        "norm": profile.norm,
        "dropout": profile.dropout,
    }


class SeededUNet(UNet):
    """MONAI's ``UNet`` whose initial weights depend only on ``seed``; its tensors are exactly ``UNet``'s.

    The federated job names this class so that the server's initial global model is the same in every run
    (NVFlare builds the model from its class path, with whatever state the server's random generator has).
    The global random state is left as it was.

    Args:
        seed: seed of the initial weights.
        kwargs: ``monai.networks.nets.UNet`` arguments.
    """

    def __init__(self, seed: int = 0, **kwargs: Any) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().__init__(**kwargs)


def build_network(profile: SegProfile) -> nn.Module:
    """A MONAI 3D UNet with the profile's channels, strides, residual units and normalisation, seeded with
    ``profile.seed``."""
    return SeededUNet(seed=profile.seed, **network_args(profile))
