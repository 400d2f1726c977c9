"""FedBN: each site keeps its own BatchNorm layers; every other weight is federated.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch Normalization" (ICLR 2021). Sites
whose CT scanners differ see the same anatomy through different intensity statistics (a feature shift): a
shared BatchNorm averages those statistics away, a site's own BatchNorm keeps them. The sites still send their
whole model, so the server's FedAvg, update checks, filters and global model are unchanged (its normalisation
is the sites' average, as in FedAvg); what changes is what a site loads: the received global weights with its
own BatchNorm layers (affine weights and running statistics) in place of the global ones. A site's own model
is therefore the global model plus its normalisation (``with_site_norm``).

NVFlare 2.9 has no FedBN; this module is the whole of it (a key filter and a merge).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norm_keys(model: torch.nn.Module) -> frozenset[str]:
    """The state-dict keys of ``model``'s BatchNorm layers (weight, bias, running mean and variance, counter)."""
    return frozenset(
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
        for key in module.state_dict()
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
