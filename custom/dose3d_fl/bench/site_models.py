"""A FedBN run's models, one per site: the final global weights with each site's own BatchNorm layers.

Under FedBN (``dose3d_fl.fl.site.fedbn``) no single model is the federation's result: a site uses the global model
with its own normalisation. The benchmark scores each site's validation cases with that site's model, and
keeps the models in the run's work folder (``SITE_MODELS``) for ``benchmarks/heldout.py``, because the sites'
saved states in the shared data caches are overwritten by the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.fl.site.fedbn import with_site_norm
from dose3d_fl.fl.site.state import STATE_DIR, SiteState
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import SegProfile

SITE_MODELS = "site_models"


def fedbn_site_models(
    global_file: Path, caches: Sequence[Path], profile: SegProfile, last_round: int
) -> dict[str, dict[str, torch.Tensor]]:
    """Each site's model after a FedBN run: ``{site (cache folder name): state dict}``.

    Args:
        global_file: the server's final global model file.
        caches: the sites' cache folders (each keeps its local state in ``fl_state``).
        profile: the run's segmentation profile.
        last_round: the run's last round (0-based): the site states saved after it hold the sites' BatchNorm.

    Raises:
        FileNotFoundError: a site has no saved state of ``last_round``.
    """
    global_weights = load_segmentation_model(
        global_file, profile.name, "the benchmark's profile", fallback=True
    ).weights
    network = build_network(profile)
    models = {}
    for cache in caches:
        state = SiteState(Path(cache) / STATE_DIR, profile.name)
        site_weights, keys = state.own_weights(last_round, network)  # FedBN's layers or SiloBN's statistics
        models[Path(cache).name] = with_site_norm(global_weights, site_weights, keys)
    return models


def save_site_models(models: dict[str, dict[str, torch.Tensor]], folder: Path) -> Path:
    """Write ``{site: state dict}`` as ``folder/<site>.pt``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for site, weights in models.items():
        torch.save(weights, folder / f"{site}.pt")
    return folder


def load_site_models(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``save_site_models``'s models back: ``{site: state dict}``.

    Raises:
        FileNotFoundError: the folder holds no model.
    """
    files = sorted(Path(folder).glob("*.pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no site model (*.pt)")
    return {path.stem: torch.load(path, map_location="cpu", weights_only=True) for path in files}
