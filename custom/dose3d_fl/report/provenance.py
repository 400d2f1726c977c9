"""Where the report's model came from: what the server's saved global model records about itself.

The server saves ``{"model": state_dict}`` and, from newer versions on, two more keys the report reads:

* ``"provenance"``: ``{"profile", "task": {"organs", "spacing_mm", "crop"}, "job_id", "job_name", "round",
  "sha256", "created", "software"}``;
* ``"profile"``: the segmentation profile (``SegProfile.to_dict``).

Whatever a file lacks is shown as "not recorded" (older files have neither key). The report also hashes the
file itself, so a reader can tell which file the page describes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.data.discovery import one_line
from dose3d_fl.report.html import Section, details, paragraph, table

NOT_RECORDED = "not recorded"
# (key path in "provenance", what the page calls it)
PROVENANCE_FIELDS = (
    (("profile",), "profile"),
    (("task", "organs"), "organs"),
    (("task", "spacing_mm"), "training voxel size (mm)"),
    (("task", "crop"), "training crop (voxels)"),
    (("job_name",), "job name"),
    (("job_id",), "job id"),
    (("round",), "round"),
    (("created",), "created"),
    (("sha256",), "SHA-256 (recorded)"),
    (("software",), "software"),
)


@dataclass
class ModelProvenance:
    """What a model file says about itself.

    Attributes:
        path: the model file (``None``: the run holds none).
        file_sha256: SHA-256 of the file's bytes, computed by the report.
        recorded: the file's ``"provenance"`` (empty when it has none).
        profile: the file's ``"profile"`` (``None`` when it has none).
        problem: one-line reason the file could not be read.
    """

    path: Path | None
    file_sha256: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    problem: str | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_provenance(path: Path | None) -> ModelProvenance:
    """Read the provenance and profile keys of a global model file; never raises for a bad file."""
    if path is None:
        return ModelProvenance(None)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        file_sha256 = _sha256(path)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not a torch checkpoint
        return ModelProvenance(path, problem=f"{path} cannot be read ({one_line(err, 160)})")
    if not isinstance(data, Mapping):
        return ModelProvenance(path, file_sha256, problem=f"{path} holds no dict of keys")
    recorded = data.get("provenance")
    profile = data.get("profile")
    return ModelProvenance(
        path,
        file_sha256,
        recorded=dict(recorded) if isinstance(recorded, Mapping) else {},
        profile=dict(profile) if isinstance(profile, Mapping) else None,
    )


def _text(value: Any) -> str:
    """A recorded value as one line: lists joined by commas, mappings as ``key value`` pairs."""
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        numbers = all(isinstance(v, int | float) for v in value)  # a voxel size or a crop: 4.0 x 4.0 x 4.0
        return (" x " if numbers else ", ").join(_text(v) for v in value)
    return str(value)


def _lookup(recorded: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = recorded
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def provenance_rows(provenance: ModelProvenance) -> list[list[str]]:
    """``[field, value]`` rows: the known fields in order ("not recorded" where absent), then any others."""
    rows = []
    for keys, name in PROVENANCE_FIELDS:
        value = _lookup(provenance.recorded, keys)
        rows.append([name, NOT_RECORDED if value is None else _text(value)])
    known_task = {keys[1] for keys, _ in PROVENANCE_FIELDS if len(keys) == 2}
    known = {keys[0] for keys, _ in PROVENANCE_FIELDS}
    task = provenance.recorded.get("task")
    if isinstance(task, Mapping):
        rows += [[f"task {k}", _text(v)] for k, v in task.items() if k not in known_task]
    rows += [[k, _text(v)] for k, v in provenance.recorded.items() if k not in known]
    return rows


def provenance_section(provenance: ModelProvenance, inference_profile: str | None) -> Section:
    """The page's first section: which model the page is about and what it records about itself.

    Args:
        provenance: from :func:`read_provenance`.
        inference_profile: how the report settled the profile it segmented the validation cases with.
    """
    if provenance.path is None:
        return Section("Model", paragraph("The run holds no saved global model: provenance not recorded."))
    rows = [["model file", str(provenance.path)]]
    if provenance.problem is not None:
        rows.append(["problem", provenance.problem])
    if provenance.file_sha256 is not None:
        rows.append(["SHA-256 of this file (computed by the report)", provenance.file_sha256])
    if provenance.recorded:
        rows += provenance_rows(provenance)
    else:
        fields = ", ".join(name for _, name in PROVENANCE_FIELDS)
        rows.append(["provenance", f"{NOT_RECORDED} (none of: {fields})"])
    stored = provenance.profile
    rows.append(
        ["profile stored in the file", NOT_RECORDED if stored is None else str(stored.get("name", "unnamed"))]
    )
    if inference_profile:
        rows.append(["profile the report segments with", inference_profile])
    parts = [table(["field", "value"], rows)]
    if stored is not None:
        fields = table(["field", "value"], [[k, _text(v)] for k, v in stored.items()])
        parts.append(details("every field of the stored profile", fields))
    if not provenance.recorded:
        parts.append(paragraph("Files saved before the server recorded provenance have none.", "note"))
    return Section("Model", "\n".join(parts))
