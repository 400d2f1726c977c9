"""The segmentation network of a profile."""

from __future__ import annotations

from typing import Any

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


def build_network(profile: SegProfile) -> nn.Module:
    """A MONAI 3D UNet with the profile's channels, strides, residual units and normalisation."""
    return UNet(**network_args(profile))
