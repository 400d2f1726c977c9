"""Robust aggregation for the dose3d workflow: coordinate-wise weighted median or trimmed mean of the sites' updates.

FedAvg's weighted mean follows any single site as far as it pulls; a coordinate-wise median or trimmed mean
does not (the server's update checks reject gross outliers first, ``dose3d_fl.fl.server.update_checks``). Plugged
in through NVFlare's ``ModelAggregator`` interface, which ``FedAvg`` calls for each accepted result; the job
chooses it with ``SegJobConfig(aggregation=...)`` or ``dose3d fl simulate|export --aggregation``.

**Transfer types.** With ``FULL`` transfer the sites send their local models and the result is a full model
(``ParamsType.FULL``), which replaces the global one. With ``DIFF`` transfer (NVFlare's ``TransferType.DIFF``)
the sites send ``local - global`` and the result is the combined difference, returned as ``ParamsType.DIFF``:
NVFlare's controller (``FLModelUtils.update_model``) then adds it to the global model. Both statistics are
translation-equivariant (``median(g + d_i) = g + median(d_i)``, the same for the trimmed mean), so both
transfer types give the same global model after a round (``tests/fl/server/test_aggregators.py``). A round
whose results mix the two types is refused (the job fixes one).

**Weights.** Each site is weighted by the local steps it reports (``NUM_STEPS_CURRENT_ROUND``, FedAvg's
weight). Reported steps are the site's own claim, so a site's weight is capped at the median of the round's
reported steps: a site cannot count for more than the median site by claiming more steps, and with one
dishonest site among three or more its weight stays below half of the total, so it cannot carry the median
alone. ``weighted=False`` gives every site the same weight. Definitions, per coordinate, for values
``x_1 <= ... <= x_n`` with weights ``w_i`` and total ``W``:

* weighted median: the midpoint of the *lower* weighted median (the smallest ``x_k`` with
  ``w_1 + ... + w_k >= W/2``) and the *upper* one (the largest ``x_k`` with ``w_k + ... + w_n >= W/2``). With
  equal weights this is the ordinary median (the mean of the two middle values for an even ``n``).
* weighted trimmed mean with ``trim_fraction`` ``b``: the ``c = floor(b n)`` smallest and ``c`` largest
  values are cut (by rank, whatever their weights; at least one value is left), and the rest are averaged
  with their weights, ``sum w_k x_k / sum w_k`` over ``k = c+1 .. n-c``. With equal weights this is the
  ordinary trimmed mean. Cutting by rank keeps the guarantee of the unweighted one: ``c`` dishonest sites
  are cut wherever they pull; cutting a share of the *weight* instead would let a heavy site at an end
  keep part of its pull.

**Tensors.** Every tensor is combined over the sites that sent it. Floating-point tensors keep their dtype;
integer buffers (BatchNorm's ``num_batches_tracked``) are rounded to the nearest integer. BatchNorm running
statistics are combined coordinate-wise like the weights: the median or trimmed mean of non-negative running
variances is non-negative (in DIFF, the global variance plus the combined difference equals the combined
variances, up to float32 rounding).

Scalar metrics are averaged with the same weights, so that the best-model selection on ``val_dice`` keeps
working; the result says so in NVFlare's metrics-aggregation information, with each site's weight, so the
server's ``metrics/round_metrics.jsonl`` lists every site's metrics as it does for FedAvg.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator
from nvflare.app_common.app_constant import AppConstants

from dose3d_fl.fl.policy.payload import as_array, like

METHODS = ("median", "trimmed_mean")
DEFAULT_TRIM_FRACTION = 0.2
WEIGHT_KEY = "robust_aggregation_weight"


def _site_weights(weights: np.ndarray | None, stack: np.ndarray) -> np.ndarray:
    """The sites' weights broadcast to ``stack``'s shape (``None``: all 1)."""
    n = stack.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"weights must be {n} positive finite numbers, got {w!r}")
    return np.broadcast_to(w.reshape(n, *([1] * (stack.ndim - 1))), stack.shape)


def weighted_median(stack: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Coordinate-wise weighted median of a ``(sites, ...)`` stack (the module docstring defines it)."""
    stack = np.asarray(stack, dtype=np.float64)
    order = np.argsort(stack, axis=0, kind="stable")
    values = np.take_along_axis(stack, order, axis=0)
    w = np.take_along_axis(_site_weights(weights, stack), order, axis=0)
    below = np.cumsum(w, axis=0)  # weight of x_1..x_k
    total = below[-1]
    above = total - below + w  # weight of x_k..x_n
    half = total / 2 * (1 - 1e-12)  # float sums of whole numbers are exact; the margin is for other weights
    lower = np.argmax(below >= half, axis=0)
    upper = stack.shape[0] - 1 - np.argmax((above >= half)[::-1], axis=0)
    pick = lambda index: np.take_along_axis(values, index[None], axis=0)[0]  # noqa: E731
    return (pick(lower) + pick(upper)) / 2


def weighted_trimmed_mean(
    stack: np.ndarray, trim_fraction: float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Coordinate-wise weighted trimmed mean of a ``(sites, ...)`` stack (the module docstring defines it)."""
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
    stack = np.asarray(stack, dtype=np.float64)
    n = stack.shape[0]
    cut = trimmed_sites(n, trim_fraction)
    order = np.argsort(stack, axis=0, kind="stable")
    values = np.take_along_axis(stack, order, axis=0)[cut : n - cut]
    w = np.take_along_axis(_site_weights(weights, stack), order, axis=0)[cut : n - cut]
    return (w * values).sum(axis=0) / w.sum(axis=0)


def trimmed_sites(n: int, trim_fraction: float) -> int:
    """How many of ``n`` values the trimmed mean cuts at each end: ``floor(trim_fraction * n)``, leaving one."""
    return min(int(np.floor(trim_fraction * n + 1e-9)), (n - 1) // 2)


def robust_combine(
    stack: np.ndarray, method: str, trim_fraction: float, weights: np.ndarray | None = None
) -> np.ndarray:
    """Combine a ``(sites, ...)`` stack coordinate-wise with ``method`` (see :data:`METHODS`).

    Args:
        stack: the sites' values, site first.
        method: ``"median"`` or ``"trimmed_mean"``.
        trim_fraction: the trimmed mean's share of the sites cut at each end.
        weights: one positive weight per site (``None``: equal weights).
    """
    if method == "median":
        return weighted_median(stack, weights)
    if method == "trimmed_mean":
        return weighted_trimmed_mean(stack, trim_fraction, weights)
    raise ValueError(f"aggregation method {method!r} is not one of {METHODS}")


def capped_weights(steps: list[float]) -> np.ndarray:
    """The sites' reported steps, each capped at their median (see the module docstring)."""
    reported = np.asarray(steps, dtype=np.float64)
    return np.minimum(reported, np.median(reported))


def reported_steps(model: FLModel) -> float:
    """A result's ``NUM_STEPS_CURRENT_ROUND`` as FedAvg reads it: 1 when missing or not a positive number."""
    value = (model.meta or {}).get(FLMetaKey.NUM_STEPS_CURRENT_ROUND)
    if value is None or isinstance(value, bool):
        return 1.0
    try:
        steps = float(value)
    except (TypeError, ValueError, OverflowError):
        return 1.0
    return steps if math.isfinite(steps) and steps > 0 else 1.0


class RobustAggregator(ModelAggregator):
    """Coordinate-wise weighted median or trimmed mean of the accepted models (FULL) or differences (DIFF).

    Args:
        method: ``"median"`` or ``"trimmed_mean"``.
        trim_fraction: the trimmed mean's share of the sites cut at each end per coordinate (``floor(b n)``
            values), in ``[0, 0.5)``; to cut ``f`` dishonest sites out of ``n`` it must be at least ``f / n``.
        weighted: weight sites by their reported steps, capped at the median site's (module docstring);
            ``False``: equal weights.
    """

    def __init__(
        self, method: str, trim_fraction: float = DEFAULT_TRIM_FRACTION, weighted: bool = True
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"aggregation method {method!r} is not one of {METHODS}")
        if not 0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {trim_fraction}")
        self.method = method
        self.trim_fraction = trim_fraction
        self.weighted = weighted
        self.reset_stats()

    def accept_model(self, model: FLModel) -> None:
        params_type = model.params_type or ParamsType.FULL
        if params_type not in (ParamsType.FULL, ParamsType.DIFF):
            raise RuntimeError(f"robust aggregation supports FULL and DIFF results, not {params_type}")
        if self._params_type is not None and params_type != self._params_type:
            raise RuntimeError(
                f"a {params_type} result in a round of {self._params_type} results: the job's transfer type "
                "is one of FULL or DIFF for every site"
            )
        self._params_type = params_type
        params = {}
        for name, value in (model.params or {}).items():
            array = as_array(value)
            if array is None:
                continue
            params[name] = array
            self._types.setdefault(name, value)
        self._models.append(params)
        self._sites.append(str((model.meta or {}).get("client_name") or AppConstants.CLIENT_UNKNOWN))
        self._steps.append(reported_steps(model))
        numeric = {
            k: float(v)
            for k, v in (model.metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._metrics.append(numeric)

    def site_weights(self) -> np.ndarray:
        """The weights of the accepted sites, in the order they were accepted."""
        if not self.weighted:
            return np.ones(len(self._steps))
        return capped_weights(self._steps)

    def aggregate_model(self) -> FLModel:
        if not self._models:
            raise RuntimeError("robust aggregation of a round with no accepted model")
        weights = self.site_weights()
        names = sorted({name for model in self._models for name in model})
        params = {}
        for name in names:
            senders = [i for i, model in enumerate(self._models) if name in model]
            stack = np.stack([self._models[i][name] for i in senders]).astype(np.float64)
            combined = robust_combine(stack, self.method, self.trim_fraction, weights[senders])
            dtype = self._models[senders[0]][name].dtype
            value = combined.astype(dtype) if dtype.kind == "f" else np.rint(combined).astype(dtype)
            params[name] = like(self._types[name], value)
        return FLModel(
            params=params,
            params_type=self._params_type or ParamsType.FULL,
            metrics=self._mean_metrics(weights),
            meta={AppConstants.METRICS_AGGREGATION_INFO: self._metrics_info(weights)},
        )

    def reset_stats(self) -> None:
        self._models: list[dict[str, np.ndarray]] = []
        self._sites: list[str] = []
        self._steps: list[float] = []
        self._metrics: list[dict[str, float]] = []
        self._types: dict[str, Any] = {}
        self._params_type: ParamsType | None = None

    def _metrics_info(self, weights: np.ndarray) -> dict[str, Any]:
        """NVFlare's metrics-aggregation information: how the round's metrics were averaged, by whom."""
        formula = (
            "min(NUM_STEPS_CURRENT_ROUND, median of the round's NUM_STEPS_CURRENT_ROUND)"
            if self.weighted
            else "1"
        )
        return {
            "metric_source": "client_reported_flmodel_metrics",
            # The metrics writer lists each accepted site's metrics, as it does for NVFlare's own FedAvg.
            "use_contribution_sites": True,
            "aggregation": {
                "method": "weighted_average",
                "weight_key": WEIGHT_KEY,
                "metric_policy": "numeric_metrics_every_site_reports",
                "weight_formula": formula,
                "model_aggregation": f"coordinate-wise weighted {self.method.replace('_', ' ')}",
            },
            "site_weights": [
                {"name": site, "weight": float(weight), "weight_key": WEIGHT_KEY}
                for site, weight in zip(self._sites, weights, strict=True)
            ],
        }

    def _mean_metrics(self, weights: np.ndarray) -> dict[str, float] | None:
        keys = set.intersection(*(set(m) for m in self._metrics)) if self._metrics else set()
        if not keys:
            return None
        total = float(weights.sum())
        return {
            k: sum(m[k] * float(w) for m, w in zip(self._metrics, weights, strict=True)) / total
            for k in sorted(keys)
        }
