"""Real NVFlare messages and filter contexts for the site-policy tests (no mocks: NVFlare's own classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nvflare.apis.fl_constant import FilterKey, FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from dose3d_fl.seg.network import SeededUNet


def tiny_model() -> dict[str, torch.Tensor]:
    """A small MONAI UNet state dict (BatchNorm buffers included)."""
    net = SeededUNet(
        seed=0,
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=(4, 8),
        strides=(2,),
        num_res_units=1,
        norm="batch",
    )
    return {k: v.clone() for k, v in net.state_dict().items()}


def context(
    direction: str,
    task: str = "train",
    job_id: str = "job-1",
    site: str = "site-1",
    app_root: Path | None = None,
) -> FLContext:
    """The filter context NVFlare sets up for a site's filter chain (``app_root``: the job's app folder)."""
    fl_ctx = FLContext()
    if app_root is not None:
        fl_ctx.set_prop(FLContextKey.APP_ROOT, str(app_root), private=True, sticky=True)
    fl_ctx.set_prop(FLContextKey.FILTER_DIRECTION, direction, private=True, sticky=False)
    fl_ctx.set_prop(FLContextKey.TASK_NAME, task, private=True, sticky=False)
    fl_ctx.set_prop(ReservedKey.RUN_NUM, job_id, private=False, sticky=False)
    fl_ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    return fl_ctx


def task_data(params: dict[str, Any], current_round: int = 0) -> Shareable:
    """What the server sends with a train task: the global model."""
    return FLModelUtils.to_shareable(FLModel(params=params, current_round=current_round, total_rounds=5))


def train_result(params: dict[str, Any], metrics: dict[str, Any] | None = None, **meta: Any) -> Shareable:
    """What the client API sends back after training (as seg_client.py builds it)."""
    metrics = {"val_dice": 0.5, "val_cases": 3, "train_loss": 0.2} if metrics is None else metrics
    model = FLModel(
        params=params, metrics=metrics, meta={"NUM_STEPS_CURRENT_ROUND": 10, **meta}, current_round=0
    )
    return FLModelUtils.to_shareable(model)


IN, OUT = FilterKey.IN, FilterKey.OUT
