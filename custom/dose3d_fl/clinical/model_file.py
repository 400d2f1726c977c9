"""Load a segmentation model file for inference: a ``dose3d train`` checkpoint or NVFlare's global model.

A ``dose3d train`` checkpoint carries its profile (``{"model", "profile", "meta"}``). NVFlare's persistor
writes ``{"model": state_dict, ...}`` without one: the caller then names the profile the federation used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.data.discovery import one_line
from dose3d_fl.seg.profiles import DEFAULT_PROFILE, SegProfile, get_profile

log = logging.getLogger(__name__)


class ModelFileError(Exception):
    """The model file cannot be used; the message is the one-line reason."""


@dataclass
class SegmentationModel:
    """Weights and the profile that says how to preprocess their input.

    Attributes:
        weights: the network's state dict (CPU tensors).
        profile: the profile the weights were trained with.
        profile_source: where the profile came from, for the user (``"stored in the model file"`` or a
            sentence naming the assumed profile).
        path: the model file.
    """

    weights: dict[str, torch.Tensor]
    profile: SegProfile
    profile_source: str
    path: Path


def load_segmentation_model(
    path: str | Path, profile: str | None = None, profile_origin: str = "given with --profile"
) -> SegmentationModel:
    """Read a model file and settle its profile.

    Args:
        path: ``model.pt`` of ``dose3d train`` or ``FL_global_model.pt`` / ``best_FL_global_model.pt`` of a
            federated run.
        profile: profile name for a file that stores none (default ``cpu-small``); a file that stores its
            profile must agree with it in every field that shapes the network or its input.
        profile_origin: where ``profile`` came from, for the message that reports the choice.

    Returns:
        The weights with their profile.

    Raises:
        ModelFileError: missing file, not a torch file, no ``model`` state dict, an unknown profile, or a
            profile that contradicts the stored one.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not a torch checkpoint
        raise ModelFileError(f"{path} is not a torch model file ({one_line(err, 120)})") from err
    weights = data.get("model") if isinstance(data, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelFileError(
            f"{path} is not a segmentation checkpoint: expected a dict with a 'model' state dict "
            "(dose3d train's model.pt or NVFlare's FL_global_model.pt)"
        )
    try:
        requested = get_profile(profile) if profile is not None else None
        if "profile" in data:
            stored = SegProfile.from_dict(data["profile"])
            if requested is not None and stored.incompatibilities(requested):
                raise ModelFileError(
                    f"{path} was trained with profile {stored.name!r}, which differs from --profile "
                    f"{requested.name!r} in {', '.join(stored.incompatibilities(requested))}; drop --profile"
                )
            return SegmentationModel(
                weights, stored, f"profile {stored.name!r} stored in the model file", path
            )
    except ValueError as err:
        raise ModelFileError(f"{path}: {one_line(err)}") from err
    chosen = requested or get_profile(DEFAULT_PROFILE)
    how = profile_origin if requested is not None else "the default"
    source = f"the file stores no profile; using profile {chosen.name!r} ({how})"
    log.info("%s: %s", path, source)
    return SegmentationModel(weights, chosen, source, path)
