"""Server-side checks of a site's model update, before it may enter the aggregate.

A site's update is rejected for the round when its tensors are not finite, when its names or shapes differ
from the global model, or when its distance from the global model is an outlier against the other sites'
(more than ``max_norm_ratio`` times the median of theirs). These checks need no NVFlare runtime; the
workflow (``dose3d_fl.fl.controller``) applies them and logs every decision in the transfer log.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np

from dose3d_fl.fl.payload import as_array

DEFAULT_MAX_NORM_RATIO = 10.0


def check_update(params: Mapping[str, Any] | None, reference: Mapping[str, Any]) -> str | None:
    """Whether an update's tensors fit the global model and are finite.

    Args:
        params: the site's tensors (a subset of the model is allowed: a job may keep tensors local).
        reference: the global model's tensors.

    Returns:
        ``None`` when the update may be aggregated, else a one-line reason.
    """
    if not params:
        return "the update carries no tensors"
    for name, value in params.items():
        array = as_array(value)
        if name not in reference:
            return f"tensor {str(name)[:64]!r} is not in the global model"
        if array is None:
            return f"entry {name!r} is {type(value).__name__}, not a tensor"
        expected = tuple(as_array(reference[name]).shape)
        if tuple(array.shape) != expected:
            return f"tensor {name!r} has shape {tuple(array.shape)}, the global model has {expected}"
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            return f"tensor {name!r} has NaN or Inf values"
    return None


def update_norm(params: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float:
    """L2 norm of ``params - reference`` over the floating-point tensors the update carries.

    ``reference`` ``None``: the update already is a difference (``DIFF`` transfer) and its own norm counts.
    """
    total = 0.0
    for name, value in params.items():
        array = as_array(value)
        if array is None or array.dtype.kind != "f":
            continue
        diff = array.astype(np.float64)
        if reference is not None:
            diff = diff - as_array(reference[name]).astype(np.float64)
        total += float(np.sum(np.square(diff)))
    return float(np.sqrt(total))


def norm_outliers(
    norms: Mapping[str, float], max_norm_ratio: float = DEFAULT_MAX_NORM_RATIO
) -> dict[str, str]:
    """Sites whose update norm exceeds ``max_norm_ratio`` times the median of the other sites' norms.

    With a single site there is nothing to compare against and nothing is flagged.

    Returns:
        site -> one-line reason, for the flagged sites only.
    """
    flagged = {}
    for site, norm in norms.items():
        others = [n for s, n in norms.items() if s != site]
        if not others:
            continue
        median = statistics.median(others)
        if median > 0 and norm > max_norm_ratio * median:
            flagged[site] = (
                f"update norm {norm:.4g} is {norm / median:.1f}x the median of the other sites ({median:.4g}); "
                f"limit {max_norm_ratio:g}x"
            )
    return flagged
