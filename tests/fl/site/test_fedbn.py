"""FedBN's and SiloBN's pieces on the real MONAI network: which tensors a site keeps, and the merge."""

from __future__ import annotations

import pytest
import torch

from dose3d_fl.fl.site.fedbn import batch_norm_keys, with_site_norm
from dose3d_fl.seg.network import build_network
from tests.seg.cases import TINY_PROFILE


def test_the_site_keeps_every_batch_norm_tensor_and_nothing_else() -> None:
    model = build_network(TINY_PROFILE)
    keys = batch_norm_keys(model)
    state = model.state_dict()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms, "the tiny profile's UNet has batch normalisation"
    # weight, bias, running mean and variance, and the batch counter of each layer
    assert len(keys) == 5 * len(norms)
    assert keys <= set(state)
    assert all(state[k].ndim <= 1 for k in keys)
    assert not any(k.endswith("conv.weight") for k in keys)


def test_silobn_keeps_the_statistics_and_federates_the_scale_and_shift() -> None:
    model = build_network(TINY_PROFILE)
    layers, statistics = batch_norm_keys(model), batch_norm_keys(model, statistics_only=True)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert statistics < layers and len(statistics) == 3 * len(norms)
    assert {k.rsplit(".", 1)[1] for k in statistics} == {"running_mean", "running_var", "num_batches_tracked"}
    assert {k.rsplit(".", 1)[1] for k in layers - statistics} == {"weight", "bias"}


def test_an_instance_norm_network_has_nothing_to_keep() -> None:
    assert batch_norm_keys(build_network(TINY_PROFILE.replace(norm="instance"))) == frozenset()


def test_the_merge_takes_the_site_norm_and_the_global_rest() -> None:
    model = build_network(TINY_PROFILE)
    keys = batch_norm_keys(model)
    site = model.state_dict()
    global_weights = {k: v + 1 if v.is_floating_point() else v + 7 for k, v in site.items()}
    merged = with_site_norm(global_weights, site, keys)
    assert merged.keys() == global_weights.keys()
    for key, value in merged.items():
        assert torch.equal(value, site[key] if key in keys else global_weights[key]), key
    model.load_state_dict(merged)  # a complete state dict of the network


def test_site_weights_without_their_norm_are_refused() -> None:
    model = build_network(TINY_PROFILE)
    keys = batch_norm_keys(model)
    site = {k: v for k, v in model.state_dict().items() if "running_mean" not in k}
    with pytest.raises(KeyError, match="BatchNorm"):
        with_site_norm(model.state_dict(), site, keys)
