"""The model files of a workspace and what each records about itself: ``dose3d models``.

Three kinds of file hold a segmentation model: ``dose3d train``'s ``model.pt`` (``{"model", "profile",
"meta"}``) and the server's ``FL_global_model.pt`` / ``best_FL_global_model.pt`` (``{"model", ...}``; the
server's persistor, ``dose3d_fl.fl.server.persistor``, adds ``"profile"`` and ``"provenance"``). A model is
named by the SHA-256 of its weights (``provenance.weights_sha256``): the same weights give the same name
whichever file holds them, so a structure set that names the hash can be traced to the file that made it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.clinical.provenance import task_of, weights_sha256
from dose3d_fl.data.discovery import one_line
from dose3d_fl.files import atomic_path
from dose3d_fl.seg.profiles import SegProfile

log = logging.getLogger(__name__)

TRAIN_MODEL_NAME = "model.pt"
GLOBAL_MODEL_NAME = "FL_global_model.pt"
BEST_GLOBAL_MODEL_NAME = "best_FL_global_model.pt"
MODEL_FILE_NAMES = (TRAIN_MODEL_NAME, GLOBAL_MODEL_NAME, BEST_GLOBAL_MODEL_NAME)
# Where ``dose3d fl simulate`` writes each simulated site's own model after a FedBN or SiloBN job
# (``WS/site_models/<site>.pt``), and where ``dose3d report`` looks for them.
SITE_MODELS_DIR = "site_models"
SHORT_HASH = 12


class ModelChoiceError(Exception):
    """No model file, or several, match what the user asked for; the message is the one-line reason."""


@dataclass
class ModelRecord:
    """What one model file records about itself.

    Attributes:
        path: the file.
        kind: ``"federated global"``, ``"federated best"``, ``"FedBN site model"``, ``"SiloBN site model"``,
            ``"dose3d train"`` or ``"checkpoint"``.
        sha256: SHA-256 of its weights, computed here (:func:`weights_sha256`); empty when unreadable.
        recorded_sha256: the hash the file's provenance records (``None``: no provenance).
        profile: profile name, from the provenance or the stored profile.
        task: ``{"organs", "spacing_mm", "crop"}``.
        job_id: the NVFlare job id.
        job_name: the NVFlare job name, or ``dose3d train``.
        round: global rounds the weights went through (federated), ``None`` otherwise.
        epochs: training epochs (``dose3d train``).
        created: ISO date and time it was saved (the file's modification time when it records none).
        software: the software that saved it.
        problem: one-line reason the file is not a usable model (then most fields are empty).
    """

    path: Path
    kind: str = "checkpoint"
    sha256: str = ""
    recorded_sha256: str | None = None
    profile: str | None = None
    task: dict[str, Any] | None = None
    job_id: str | None = None
    job_name: str | None = None
    round: int | None = None
    epochs: int | None = None
    created: str | None = None
    software: str | None = None
    problem: str | None = None

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of the weights' hash: how a person names the model."""
        return self.sha256[:SHORT_HASH]

    @property
    def hash_mismatch(self) -> bool:
        """The recorded hash differs from the weights': the file was changed after it was saved."""
        return self.recorded_sha256 is not None and self.recorded_sha256 != self.sha256

    def training(self) -> str:
        """Where the weights come from in a few words: ``seg_fedavg round 25``, ``dose3d train 30 epochs``."""
        if self.round is not None:
            return f"{self.job_name or self.job_id or 'job ?'} round {self.round}"
        if self.epochs is not None:
            return f"{self.job_name or 'dose3d train'} {self.epochs} epochs"
        return f"{self.path.name} (no provenance)"

    def series_description(self) -> str:
        """A SeriesDescription (at most 64 characters) naming the model: hash, job and round."""
        return f"dose3d-fl {self.short_hash} {self.training()}"[:64]

    def description(self) -> str:
        """The whole provenance in one sentence (a StructureSetDescription, at most 1024 characters)."""
        parts = [f"model sha256 {self.sha256}", f"profile {self.profile or '?'}"]
        if self.job_name or self.job_id:
            parts.append(f"job {self.job_name or '?'} (id {self.job_id or '?'})")
        if self.round is not None:
            parts.append(f"global round {self.round}")
        if self.epochs is not None:
            parts.append(f"{self.epochs} epochs")
        if self.created:
            parts.append(f"saved {self.created}")
        if self.software:
            parts.append(f"by {self.software}")
        parts.append(f"file {self.path.name}")
        return ("Automatic segmentation, not reviewed: " + ", ".join(parts))[:1024]


def model_record(path: Path, data: Mapping[str, Any]) -> ModelRecord:
    """The record of a loaded model file (``torch.load`` of it, a dict holding a ``"model"`` state dict)."""
    path = Path(path)
    weights = data["model"]
    record = ModelRecord(path=path, sha256=weights_sha256(weights), created=_modified(path))
    profile = data.get("profile")
    if isinstance(profile, Mapping):
        record.profile = str(profile.get("name")) if profile.get("name") else None
        try:
            record.task = task_of(SegProfile.from_dict(dict(profile)))
        except (TypeError, ValueError) as err:
            record.problem = f"its stored profile is not readable ({one_line(err, 120)})"
    provenance = data.get("provenance")
    if isinstance(provenance, Mapping):
        record.kind = "federated best" if path.name.startswith("best_") else "federated global"
        record.recorded_sha256 = _text(provenance.get("sha256"))
        record.profile = _text(provenance.get("profile")) or record.profile
        task = provenance.get("task")
        record.task = dict(task) if isinstance(task, Mapping) else record.task
        record.job_id = _text(provenance.get("job_id"))
        record.job_name = _text(provenance.get("job_name"))
        record.round = _integer(provenance.get("round"))
        record.created = _text(provenance.get("created")) or record.created
        record.software = _text(provenance.get("software"))
        return record
    if path.name in (GLOBAL_MODEL_NAME, BEST_GLOBAL_MODEL_NAME):
        record.kind = "federated best" if path.name.startswith("best_") else "federated global"
        return record
    meta = data.get("meta")
    if isinstance(meta, Mapping) and meta.get("fedbn"):
        # A FedBN or SiloBN site's model (``dose3d fl site-model``): the global model's job and round, the
        # site's norm.
        record.kind = "SiloBN site model" if meta.get("site_norm") == "statistics" else "FedBN site model"
        record.job_id, record.job_name = _text(meta.get("job_id")), _text(meta.get("job_name"))
        record.round = _integer(meta.get("round"))
        return record
    metrics = meta.get("metrics") if isinstance(meta, Mapping) else None
    if isinstance(metrics, Mapping):
        record.kind = "dose3d train"
        record.job_name = "dose3d train"
        record.epochs = _integer(metrics.get("epochs"))
        started = metrics.get("started_at")
        if isinstance(started, int | float):
            record.created = dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds")
    return record


def read_model_record(path: str | Path) -> ModelRecord:
    """Load a model file and return its record; an unreadable file gives a record with ``problem`` set."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not a torch checkpoint
        return ModelRecord(path=path, problem=f"not a torch model file ({one_line(err, 120)})")
    weights = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return ModelRecord(path=path, problem="no 'model' state dict in it")
    return model_record(path, data)


def find_model_files(workspace: str | Path) -> list[Path]:
    """Every ``model.pt``, ``FL_global_model.pt`` and ``best_FL_global_model.pt`` under ``workspace``, sorted.

    Raises:
        ModelChoiceError: ``workspace`` is not a folder.
    """
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise ModelChoiceError(f"workspace {workspace} does not exist or is not a folder")
    return sorted(p for name in MODEL_FILE_NAMES for p in workspace.rglob(name) if p.is_file())


def list_models(workspace: str | Path) -> list[ModelRecord]:
    """The records of every model file under ``workspace``, oldest first (by their recorded date)."""
    records = [read_model_record(path) for path in find_model_files(workspace)]
    return sorted(records, key=lambda r: (r.created or "", str(r.path)))


def choose_model(records: list[ModelRecord], hash_prefix: str) -> ModelRecord:
    """The model whose weights' hash starts with ``hash_prefix``.

    Several files may hold the same weights (a best model is often also the last global one): any of them is
    the model, and the first with provenance is returned.

    Raises:
        ModelChoiceError: the prefix is not hexadecimal, or matches no model or several different models.
    """
    prefix = hash_prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise ModelChoiceError(
            f"{hash_prefix!r} is not a hash prefix (hexadecimal digits, as dose3d models lists)"
        )
    matches = [r for r in records if r.sha256 and r.sha256.startswith(prefix)]
    if not matches:
        raise ModelChoiceError(
            f"no model's hash starts with {prefix}; run dose3d models WORKSPACE to list them"
        )
    if len({r.sha256 for r in matches}) > 1:
        listed = ", ".join(sorted({r.short_hash for r in matches}))
        raise ModelChoiceError(f"{prefix} matches several models ({listed}); give more digits")
    return next((r for r in matches if r.recorded_sha256), matches[0])


def copy_model(record: ModelRecord, to: str | Path) -> Path:
    """Copy a model file to ``to`` (a file, or an existing folder to copy into), atomically.

    Returns:
        The written file.

    Raises:
        ModelChoiceError: the copy's weights differ from the record (the source changed meanwhile).
    """
    target = Path(to)
    if target.is_dir():
        target = target / record.path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(record.path, tmp)
        copied = read_model_record(tmp)
        if copied.sha256 != record.sha256:
            raise ModelChoiceError(f"{record.path} changed while it was copied; copy it again")
        shutil.copymode(record.path, tmp)
    log.info("copied %s (%s) to %s", record.path, record.short_hash, target)
    return target


def _modified(path: Path) -> str:
    stamp = path.stat().st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat(timespec="seconds")


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _integer(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
