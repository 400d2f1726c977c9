"""Segmentation checkpoints: weights plus the profile that says how to preprocess the model's input.

File layout (``torch.save``): ``{"model": state_dict, "profile": SegProfile.to_dict(), "meta": {...}}``,
the same ``"model"`` key that NVFlare's persistor uses, so ``torch.load(path)["model"]`` works on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.files import torch_save_atomic
from dose3d_fl.seg.profiles import SegProfile


@dataclass
class SegCheckpoint:
    """A loaded checkpoint.

    Attributes:
        model: the network's state dict (CPU tensors).
        profile: the profile the network was trained with.
        meta: free-form JSON-like facts (epochs, metrics, versions).
    """

    model: dict[str, torch.Tensor]
    profile: SegProfile
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, checkpoint: SegCheckpoint) -> Path:
    """Write a checkpoint atomically (written beside the target, then renamed)."""
    return torch_save_atomic(
        {"model": checkpoint.model, "profile": checkpoint.profile.to_dict(), "meta": checkpoint.meta}, path
    )


def load_checkpoint(path: str | Path) -> SegCheckpoint:
    """Read a checkpoint written by ``save_checkpoint`` (tensors are mapped to the CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a dose3d segmentation checkpoint (no ``model`` or ``profile`` entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "model" not in data or "profile" not in data:
        raise ValueError(
            f"{path} is not a dose3d segmentation checkpoint (expected a dict with 'model' and 'profile')"
        )
    return SegCheckpoint(
        model=data["model"], profile=SegProfile.from_dict(data["profile"]), meta=data.get("meta", {})
    )
