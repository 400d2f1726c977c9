"""The server's model files with their profile and provenance, so a physicist can trace every global model.

NVFlare's ``PTFileModelPersistor`` writes ``FL_global_model.pt`` (after every round) and
``best_FL_global_model.pt`` (when the sites' validation Dice is the best so far) as ``{"model": state_dict,
...}``. ``SegModelPersistor`` writes the same files with two more keys:

* ``"profile"``: the job's ``SegProfile.to_dict()``, the key ``dose3d train``'s ``model.pt`` uses, so
  ``dose3d segment`` preprocesses a new CT as the sites did;
* ``"provenance"``: ``{"profile", "task": {"organs", "spacing_mm", "crop"}, "job_id", "job_name", "round",
  "sha256", "created", "software"}``. ``round`` counts the aggregation rounds the weights went through:
  ``FL_global_model.pt`` saved after the n-th round says n; a best model is the one the sites received and
  validated at the start of a round, so after the n-th round's aggregation it says n. ``sha256`` is
  ``dose3d_fl.clinical.provenance.weights_sha256`` of the weights (sorted keys, dtype, shape and bytes), so
  it names the weights whichever file holds them.

The network is built from the profile and the job's organs (``dose3d_fl.seg.network``), as every site
builds it, so the job names only those.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor

from dose3d_fl import __version__
from dose3d_fl.clinical.provenance import task_of, weights_sha256
from dose3d_fl.seg.network import network_args
from dose3d_fl.seg.profiles import get_profile

NETWORK_CLASS = "dose3d_fl.seg.network.SeededUNet"
PROFILE_KEY = "profile"
PROVENANCE_KEY = "provenance"


class SegModelPersistor(PTFileModelPersistor):
    """``PTFileModelPersistor`` whose global and best model files carry the profile and their provenance.

    Args:
        profile: the job's segmentation profile name (``dose3d_fl.seg.profiles``); the server builds the
            initial network from it.
        organs: the job's organs (TG-263 names), which replace the profile's: the network's classes and the
            ``task`` of the provenance; None: the profile's.
        seed: the job's training seed, which draws the initial weights; None: the profile's.
    """

    def __init__(self, profile: str, organs: Sequence[str] | None = None, seed: int | None = None) -> None:
        seg_profile = get_profile(profile, organs, seed)
        super().__init__(
            model={"path": NETWORK_CLASS, "args": {"seed": seg_profile.seed, **network_args(seg_profile)}}
        )
        self.profile = profile
        self.organs = list(seg_profile.organs)
        self.seed = seed  # NVFlare's job export writes the constructor's arguments from these attributes
        self._seg_profile = seg_profile
        self._job_id: str | None = None
        self._job_name: str | None = None
        self._round = 0

    def handle_event(self, event: str, fl_ctx: FLContext) -> None:
        if event == EventType.START_RUN:
            self._job_id = fl_ctx.get_job_id() or None
            self._job_name = _job_name(fl_ctx, self._job_id)
        elif event == AppEventType.GLOBAL_BEST_MODEL_AVAILABLE:
            # Fired before a round's aggregation: the best model is the one the sites received this round.
            self._round = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0) or 0)
        super().handle_event(event, fl_ctx)

    def save_model(self, ml: ModelLearnable, fl_ctx: FLContext) -> None:
        # Called after a round's aggregation: the weights went through rounds 0..current.
        self._round = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND, 0) or 0) + 1
        super().save_model(ml, fl_ctx)

    def save_model_file(self, save_path: str) -> None:
        manager = self.persistence_manager
        weights = manager.to_persistence_dict()["model"]
        manager.other_props[PROFILE_KEY] = self._seg_profile.to_dict()
        manager.other_props[PROVENANCE_KEY] = model_provenance(
            self._seg_profile.name,
            task_of(self._seg_profile),
            job_id=self._job_id,
            job_name=self._job_name,
            round_=self._round,
            sha256=weights_sha256(weights),
        )
        super().save_model_file(save_path)


def model_provenance(
    profile: str,
    task: dict[str, Any],
    *,
    job_id: str | None,
    job_name: str | None,
    round_: int,
    sha256: str,
    created: dt.datetime | None = None,
) -> dict[str, Any]:
    """The ``"provenance"`` entry of a saved global model (plain values, for ``torch.load(weights_only=True)``).

    Args:
        profile: the profile name.
        task: ``clinical.provenance.task_of`` of the profile.
        job_id: the NVFlare job id.
        job_name: the NVFlare job name.
        round_: aggregation rounds the weights went through.
        sha256: ``clinical.provenance.weights_sha256`` of the weights.
        created: when it was saved (default now, UTC).
    """
    created = created or dt.datetime.now(dt.UTC)
    return {
        "profile": profile,
        "task": task,
        "job_id": job_id,
        "job_name": job_name,
        "round": int(round_),
        "sha256": sha256,
        "created": created.isoformat(timespec="seconds"),
        "software": f"dose3d-fl {__version__}",
    }


def _job_name(fl_ctx: FLContext, job_id: str | None) -> str | None:
    """The job's name from its ``meta.json`` in the server's run folder, or from the job meta in context."""
    meta = fl_ctx.get_prop(FLContextKey.JOB_META)
    if isinstance(meta, dict) and meta.get("name"):
        return str(meta["name"])
    engine = fl_ctx.get_engine()
    if engine is None or not job_id:
        return None
    try:
        path = Path(engine.get_workspace().get_job_meta_path(job_id))
        return str(json.loads(path.read_text()).get("name") or "") or None
    except (OSError, ValueError, AttributeError):
        return None
