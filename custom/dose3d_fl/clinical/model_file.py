"""Load a segmentation model file for inference: a ``dose3d train`` checkpoint or the server's global model.

Both carry their profile: ``dose3d train`` writes ``{"model", "profile", "meta"}``, the server's persistor
(``dose3d_fl.fl.server.persistor``) ``{"model", "profile", "provenance", ...}``. A file without a profile
(saved by NVFlare's own persistor, before the server stored it) needs the profile named by the caller: there
is no default, since a wrong profile preprocesses the CT wrongly without any error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.clinical.models import ModelRecord, model_record
from dose3d_fl.clinical.provenance import task_of
from dose3d_fl.data.discovery import one_line
from dose3d_fl.seg.profiles import PROFILES, SegProfile, get_profile

log = logging.getLogger(__name__)


class ModelFileError(Exception):
    """The model file cannot be used; the message is the one-line reason."""


@dataclass
class SegmentationModel:
    """Weights, the profile that says how to preprocess their input, and what the file records about itself.

    Attributes:
        weights: the network's state dict (CPU tensors).
        profile: the profile the weights were trained with.
        profile_source: where the profile came from, for the user.
        path: the model file.
        record: the file's identity: weights' hash, job, round (``dose3d_fl.clinical.models``).
    """

    weights: dict[str, torch.Tensor]
    profile: SegProfile
    profile_source: str
    path: Path
    record: ModelRecord


def load_segmentation_model(
    path: str | Path,
    profile: str | None = None,
    profile_origin: str = "given with --profile",
    fallback: bool = False,
) -> SegmentationModel:
    """Read a model file and settle its profile.

    Args:
        path: ``model.pt`` of ``dose3d train`` or ``FL_global_model.pt`` / ``best_FL_global_model.pt`` of a
            federated run.
        profile: profile name; required for a file that stores none. A file that stores its profile must
            agree with it in every field that shapes the network or its input.
        profile_origin: where ``profile`` came from, for the message that reports the choice.
        fallback: ``profile`` is only for a file that stores none (e.g. the job's profile name, which lacks
            the job's organs); a stored profile is used as it is.

    Returns:
        The weights with their profile and record.

    Raises:
        ModelFileError: missing file, not a torch file, no ``model`` state dict, an unknown profile, a profile
            that contradicts the stored one, or no profile at all.
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
        stored = SegProfile.from_dict(data["profile"]) if "profile" in data else None
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: {one_line(err)}") from err
    record = model_record(path, data)
    if stored is not None:
        if requested is not None and not fallback and stored.incompatibilities(requested):
            raise ModelFileError(
                f"{path} was trained with profile {stored.name!r}, which differs from --profile "
                f"{requested.name!r} in {', '.join(stored.incompatibilities(requested))}; drop --profile"
            )
        return SegmentationModel(
            weights, stored, f"profile {stored.name!r} stored in the model file", path, record
        )
    if requested is None:
        raise ModelFileError(
            f"{path} stores no profile (saved before the server recorded it); pass the profile the job "
            f"trained with: --profile NAME (one of {', '.join(PROFILES)})"
        )
    source = f"the file stores no profile; using profile {requested.name!r} ({profile_origin})"
    log.info("%s: %s", path, source)
    record.profile, record.task = requested.name, record.task or task_of(requested)
    return SegmentationModel(weights, requested, source, path, record)
