"""FedBN and SiloBN: each site keeps its own BatchNorm layers, or their statistics; the rest is federated.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch Normalization" (ICLR 2021). Sites
whose CT scanners differ see the same anatomy through different intensity statistics (a feature shift): a
shared BatchNorm averages those statistics away, a site's own BatchNorm keeps them. The sites still send their
whole model, so the server's FedAvg, update checks, filters and global model are unchanged (its normalisation
is the sites' average, as in FedAvg); what changes is what a site loads: the received global weights with its
own BatchNorm layers (affine weights and running statistics) in place of the global ones. A site's own model
is therefore the global model plus its normalisation (``with_site_norm``).

SiloBN (Andreux et al., "Siloed Federated Learning for Multi-Centric Histopathology Datasets", DART 2020)
keeps less at the site: only the running statistics (mean and variance), while the BatchNorm's learnt scale
and shift are federated like any weight. A small site then learns its scale and shift from every site's data,
not from its own few patients, and still normalises with its scanner's statistics.

NVFlare 2.9 has neither; this module is the whole of both (a key filter and a merge).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.batchnorm import _BatchNorm

# A BatchNorm layer's buffers: what SiloBN keeps at the site.
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def batch_norm_keys(model: torch.nn.Module, statistics_only: bool = False) -> frozenset[str]:
    """The state-dict keys of ``model``'s BatchNorm layers.

    Args:
        model: the network.
        statistics_only: only the running statistics and their counter (SiloBN); by default also the learnt
            weight and bias (FedBN).
    """
    return frozenset(
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
        for key in module.state_dict()
        if not statistics_only or key in STATISTICS
    )


def with_site_norm(
    global_weights: Mapping[str, torch.Tensor],
    site_weights: Mapping[str, torch.Tensor],
    site_keys: frozenset[str],
) -> dict[str, torch.Tensor]:
    """The global weights with the site's own tensors at ``site_keys``.

    Raises:
        KeyError: the site's weights lack one of ``site_keys`` that the global weights have.
    """
    missing = sorted(k for k in site_keys if k in global_weights and k not in site_weights)
    if missing:
        raise KeyError(f"the site's weights lack {len(missing)} BatchNorm tensors, e.g. {missing[0]!r}")
    return {key: site_weights[key] if key in site_keys else value for key, value in global_weights.items()}
