"""How a model is named and what it segments: the SHA-256 of its weights and its task.

Kept apart from ``models`` (which finds and reads model files) so that the server's persistor
(``dose3d_fl.fl.server.persistor``), which records both in every global model it saves, imports only this
and the profiles: NVFlare copies the modules a job's components import into the job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from dose3d_fl.seg.profiles import SegProfile

# The organ of a profile that names none (class 1); a profile with an ``organs`` field names its own.
DEFAULT_ORGANS = ("SPLEEN",)


def weights_sha256(weights: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's contents, the same whichever file or container holds them.

    For each key in sorted order the digest takes: the key (UTF-8), a NUL byte, the dtype (``str`` of the
    torch dtype, e.g. ``torch.float32``) directly followed by the shape (``2,8,3,3,3``), a NUL byte, then the
    tensor's bytes in C order as torch holds them (little-endian on x86 and ARM). NumPy arrays are hashed as
    the tensors ``torch.as_tensor`` makes of them.

    Args:
        weights: parameter name -> tensor or array.

    Returns:
        The hex digest (64 characters).
    """
    digest = hashlib.sha256()
    for key in sorted(weights):
        tensor = torch.as_tensor(weights[key]).detach().cpu().contiguous()
        digest.update(key.encode("utf-8") + b"\0")
        digest.update(f"{tensor.dtype}{','.join(str(n) for n in tensor.shape)}".encode("ascii") + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def task_of(profile: SegProfile) -> dict[str, list[Any]]:
    """What a profile's model segments and on which grid: ``{"organs", "spacing_mm", "crop"}``."""
    organs = getattr(profile, "organs", None) or DEFAULT_ORGANS
    return {"organs": list(organs), "spacing_mm": list(profile.pixdim), "crop": list(profile.roi_size)}
