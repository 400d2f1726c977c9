"""The network factory."""

from __future__ import annotations

import json

import torch
from monai.networks.nets import UNet

from dose3d_fl.seg.network import SeededUNet, build_network, network_args
from dose3d_fl.seg.profiles import get_profile
from tests.seg.cases import TINY_PROFILE


def test_network_maps_a_roi_to_class_logits_of_the_same_size():
    network = build_network(TINY_PROFILE).eval()
    with torch.no_grad():
        logits = network(torch.zeros(1, 1, *TINY_PROFILE.roi_size))
    assert logits.shape == (1, TINY_PROFILE.out_channels, *TINY_PROFILE.roi_size)


def test_network_args_are_json_and_build_the_same_unet():
    profile = get_profile()
    args = json.loads(json.dumps(network_args(profile)))
    assert UNet(**args).state_dict().keys() == build_network(profile).state_dict().keys()


def test_instance_norm_profile_has_no_running_statistics():
    network = build_network(TINY_PROFILE.replace(norm="instance"))
    assert not any("running_mean" in name for name in network.state_dict())


def test_initial_weights_follow_the_seed_and_leave_the_global_generator_alone():
    profile = get_profile()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = SeededUNet(seed=0, **network_args(profile)).state_dict()
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream did not move
    again = SeededUNet(seed=0, **network_args(profile)).state_dict()
    other = SeededUNet(seed=1, **network_args(profile)).state_dict()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
