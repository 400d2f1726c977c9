"""A FedBN site's own model file: the federation's global model with this site's BatchNorm layers.

Under FedBN (``dose3d_fl.fl.site.fedbn``) the server's global model carries the sites' average normalisation; a
site segments its patients with the global weights and its own BatchNorm layers, which never left it (they are
in its local training state, ``fl_state`` in its cache folder). ``write_site_model`` writes that model as a
checkpoint that ``dose3d segment`` reads; ``dose3d fl site-model`` runs it at the site after the job.

Under SiloBN the same, with only the site's BatchNorm statistics: the site's state records which tensors
were its own (``SiteState.own_weights``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.fl.site.fedbn import STATISTICS, with_site_norm
from dose3d_fl.fl.site.state import SiteState
from dose3d_fl.seg.checkpoint import SegCheckpoint, save_checkpoint
from dose3d_fl.seg.network import build_network

logger = logging.getLogger(__name__)


def write_site_model(global_file: Path, state_folder: Path, out: Path, profile: str | None = None) -> Path:
    """Write the global model with the site's own BatchNorm layers as a checkpoint with its profile.

    Args:
        global_file: the federation's global model (``FL_global_model.pt`` or ``best_FL_global_model.pt``).
        state_folder: the site's local state folder (``fl_state`` in its cache folder).
        out: the model file to write.
        profile: the profile of a global model file that stores none (default ``cpu-small``).

    Raises:
        dose3d_fl.clinical.model_file.ModelFileError: the global model file is missing or unusable.
        FileNotFoundError: the site has no local state of the model's profile.
        KeyError: the site's state lacks BatchNorm tensors of the network.
        ValueError: the site kept no weights of its own in the job (FedAvg: use the global model).
    """
    model = load_segmentation_model(global_file, profile)
    state = SiteState(state_folder, model.profile.name)
    current_round = state.latest_round()
    site_weights, keys = state.own_weights(current_round, build_network(model.profile))
    weights = with_site_norm(model.weights, site_weights, keys)
    source = model.record  # the global model's identity, so the site's RTSTRUCTs name the job and round
    meta = {
        "global_model": Path(global_file).name,
        "global_sha256": source.sha256,
        "job_id": source.job_id,
        "job_name": source.job_name,
        "round": source.round,
        "site_norm_round": current_round,
        "fedbn": True,
        # What the site kept of its own: every BatchNorm tensor (FedBN) or only their statistics (SiloBN).
        "site_norm": "statistics" if all(key.rsplit(".", 1)[-1] in STATISTICS for key in keys) else "layers",
    }
    save_checkpoint(out, SegCheckpoint(weights, model.profile, meta))
    logger.info("wrote %s: %s with the site's BatchNorm of round %d", out, global_file, current_round)
    return Path(out)
