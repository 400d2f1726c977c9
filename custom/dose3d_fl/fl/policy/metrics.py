"""The metrics a job declares that its sites send, and how a site's weights-only guard finds the declaration.

A job declares, by name, the scalar metrics its client script sends (the metrics of a train result and of a
validation result) as ``"dose3d_metrics": [...]`` in its client configuration (``config_fed_client.json``;
:func:`declare_metrics`, called by the job recipes). The declaration travels with the job, so a site's
operator sees it before the job runs. Each site's weights-only guard (``dose3d_fl.fl.policy.filters``) reads it
from the job's app folder in the site's own workspace (:func:`declared_metrics`) and refuses a result that
carries any other metric: at most the declared names, so at most as many numbers as names, leave per result.
A job that declares nothing may send no metrics. The refusal is logged at the site with a one-line reason.

Per-organ metrics are named ``<metric>_<organ>`` with the organ's TG-263 name (``val_dice_Kidney_L``,
:func:`organ_metric_names`): a job declares them for exactly the organs of its task, so a job with the spleen
alone allows ``val_dice_Spleen`` and no other organ's.

What the allow-list does not do: the values are not noised (differential privacy covers the weights only),
and each value is a 64-bit number a job's own code chooses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nvflare.apis.fl_constant import FLContextKey, JobConstants
from nvflare.apis.fl_context import FLContext

from dose3d_fl.fl.policy.payload import MAX_METRICS, MAX_NAME_LENGTH

METRICS_KEY = "dose3d_metrics"
# What a segmentation site reports per organ of the task (seg_client.organ_metrics, seg_job.site_metrics).
SEG_ORGAN_METRICS = ("val_dice", "val_hd95", "val_surface_dice", "val_cases")


def metric_names(names: Iterable[str]) -> list[str]:
    """The names as a declaration: unique, short strings, at most ``MAX_METRICS``.

    Raises:
        ValueError: a name that is not a short string, a repeated name, or too many names.
    """
    listed = list(names)
    bad = [n for n in listed if not isinstance(n, str) or not n or len(n) > MAX_NAME_LENGTH]
    if bad:
        raise ValueError(f"metric names must be strings of 1 to {MAX_NAME_LENGTH} characters, got {bad[:3]}")
    if len(set(listed)) != len(listed):
        raise ValueError(f"metric names repeat: {sorted(listed)}")
    if len(listed) > MAX_METRICS:
        raise ValueError(f"a job may declare at most {MAX_METRICS} metrics, got {len(listed)}")
    return listed


def organ_metric_names(metrics: Iterable[str], organs: Iterable[str]) -> list[str]:
    """``<metric>_<organ>`` for every metric and organ, metric by metric (e.g. ``val_dice_Spleen``)."""
    organs = list(organs)
    return [f"{metric}_{organ}" for metric in metrics for organ in organs]


def declare_metrics(recipe: Any, names: Iterable[str]) -> None:
    """Declare in a recipe's client configuration the metrics its sites send (``"dose3d_metrics"``)."""
    recipe.add_client_config({METRICS_KEY: metric_names(names)})


def declared_metrics(fl_ctx: FLContext) -> tuple[str, ...] | None:
    """The metric names the running job declares, read from its client configuration at this site.

    Returns:
        The declared names, or ``None`` when the job declares none (or its configuration cannot be read or
        holds a malformed declaration).
    """
    app_root = fl_ctx.get_prop(FLContextKey.APP_ROOT)
    if not app_root:
        return None
    config_name = getattr(fl_ctx.get_prop(FLContextKey.ARGS), "client_config", None)
    candidates = [Path(app_root) / config_name] if isinstance(config_name, str) else []
    candidates.append(job_config_path(app_root))
    for path in candidates:
        if path.is_file():
            try:
                names = json.loads(path.read_text()).get(METRICS_KEY)
                return tuple(metric_names(names)) if isinstance(names, list) else None
            except (OSError, ValueError, AttributeError):
                return None
    return None


def job_config_path(app_root: str | os.PathLike[str]) -> Path:
    """Where a job's client configuration lies in its app folder."""
    return Path(app_root) / "config" / JobConstants.CLIENT_JOB_CONFIG
