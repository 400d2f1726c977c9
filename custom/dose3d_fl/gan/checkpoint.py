"""GAN checkpoints: ``{"model": state_dict, "gan_profile": GanProfile.to_dict(), "meta": {...}}``.

The ``"model"`` key is the one NVFlare's persistor uses, so the server's ``FL_global_model.pt`` (which has
no profile) loads with the same function, given a profile name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.files import torch_save_atomic
from dose3d_fl.gan.network import GENERATOR_PREFIX, SeededGenerator, network_args
from dose3d_fl.gan.profiles import GanProfile, get_gan_profile


@dataclass
class GanCheckpoint:
    """A loaded GAN checkpoint: weights (``generator.*``, maybe ``discriminator.*``), profile, facts."""

    model: dict[str, torch.Tensor]
    profile: GanProfile
    meta: dict[str, Any] = field(default_factory=dict)


def save_gan_checkpoint(path: str | Path, checkpoint: GanCheckpoint) -> Path:
    """Write a checkpoint atomically (written beside the target, then renamed)."""
    data = {"model": checkpoint.model, "gan_profile": checkpoint.profile.to_dict(), "meta": checkpoint.meta}
    return torch_save_atomic(data, path)


def load_gan_checkpoint(path: str | Path, profile: str | None = None) -> tuple[GanCheckpoint, str]:
    """Read a ``dose3d gan train`` checkpoint or the GAN job's ``FL_global_model.pt``.

    Args:
        path: the model file.
        profile: GAN profile for a file that stores none (NVFlare's); default ``cpu-small``.

    Returns:
        The checkpoint and a sentence saying where its profile came from.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a dict with a ``model`` entry, or no generator tensors in it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GAN model {path} not found")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path} is not a GAN model file (expected a dict with a 'model' state dict)")
    if not any(name.startswith(GENERATOR_PREFIX) for name in data["model"]):
        raise ValueError(
            f"{path} holds no 'generator.*' tensors: it is not a GAN model (a segmentation model? use "
            "`dose3d segment` for those)"
        )
    if "gan_profile" in data:
        gan_profile, source = GanProfile.from_dict(data["gan_profile"]), "profile stored in the checkpoint"
    else:
        gan_profile = get_gan_profile(profile or "cpu-small")
        source = f"no profile stored (NVFlare model file): using {gan_profile.name!r}" + (
            "" if profile else " (the default; pass --profile for another)"
        )
    return GanCheckpoint(data["model"], gan_profile, data.get("meta", {})), source


def load_generator(checkpoint: GanCheckpoint) -> SeededGenerator:
    """The checkpoint's generator, ready to sample.

    Raises:
        ValueError: the generator tensors do not fit the profile (the message says to pass ``--profile``).
    """
    generator = SeededGenerator(**network_args(checkpoint.profile))
    weights = {k: v for k, v in checkpoint.model.items() if k.startswith(GENERATOR_PREFIX)}
    try:
        generator.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    except RuntimeError as err:
        raise ValueError(
            f"the generator weights do not fit GAN profile {checkpoint.profile.name!r} ({str(err).splitlines()[0]}); "
            "pass the profile the model was trained with (--profile)"
        ) from None
    return generator.eval()
