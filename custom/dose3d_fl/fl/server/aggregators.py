"""Robust aggregation for the dose3d workflow: coordinate-wise median or trimmed mean of the sites' models.

FedAvg's weighted mean follows any single site as far as it pulls; a coordinate-wise median or trimmed mean
does not (the server's update checks reject gross outliers first, ``dose3d_fl.fl.server.update_checks``). Plugged
in through NVFlare's ``ModelAggregator`` interface, which ``FedAvg`` calls for each accepted result. Sites
are not weighted by their steps (a median has no weights); scalar metrics are averaged by steps so that the
best-model selection on ``val_dice`` keeps working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator

from dose3d_fl.fl.policy.payload import as_array, like

METHODS = ("median", "trimmed_mean")


def robust_combine(stack: np.ndarray, method: str, trim_fraction: float) -> np.ndarray:
    """Combine a ``(sites, ...)`` stack coordinate-wise with ``method`` (see :data:`METHODS`)."""
    if method == "median":
        return np.median(stack, axis=0)
    n = stack.shape[0]
    cut = min(int(np.floor(trim_fraction * n)), (n - 1) // 2)
    ordered = np.sort(stack, axis=0)
    return ordered[cut : n - cut].mean(axis=0)


class RobustAggregator(ModelAggregator):
    """Coordinate-wise median or trimmed mean of the accepted full models of a round.

    Args:
        method: ``"median"`` or ``"trimmed_mean"``.
        trim_fraction: share of sites cut at each end per coordinate for the trimmed mean (at least one
            site always remains).
    """

    def __init__(self, method: str = "median", trim_fraction: float = 0.2) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"aggregation method {method!r} is not one of {METHODS}")
        self.method = method
        self.trim_fraction = trim_fraction
        self._models: list[dict[str, np.ndarray]] = []
        self._metrics: list[tuple[dict[str, Any], float]] = []
        self._types: dict[str, Any] = {}

    def accept_model(self, model: FLModel) -> None:
        params = {}
        for name, value in (model.params or {}).items():
            params[name] = as_array(value)
            self._types.setdefault(name, value)
        self._models.append(params)
        weight = float((model.meta or {}).get(FLMetaKey.NUM_STEPS_CURRENT_ROUND, 1.0) or 1.0)
        numeric = {k: float(v) for k, v in (model.metrics or {}).items() if isinstance(v, (int, float))}
        self._metrics.append((numeric, weight))

    def aggregate_model(self) -> FLModel:
        if not self._models:
            raise RuntimeError("robust aggregation of a round with no accepted model")
        names = set.intersection(*(set(m) for m in self._models))
        params = {}
        for name in sorted(names):
            stack = np.stack([m[name] for m in self._models]).astype(np.float64)
            combined = robust_combine(stack, self.method, self.trim_fraction)
            dtype = self._models[0][name].dtype
            value = combined.astype(dtype) if dtype.kind == "f" else np.rint(combined).astype(dtype)
            params[name] = like(self._types[name], value)
        return FLModel(params=params, params_type=ParamsType.FULL, metrics=self._mean_metrics())

    def reset_stats(self) -> None:
        self._models, self._metrics, self._types = [], [], {}

    def _mean_metrics(self) -> dict[str, float] | None:
        keys = set.intersection(*(set(m) for m, _ in self._metrics)) if self._metrics else set()
        if not keys:
            return None
        total = sum(w for _, w in self._metrics)
        return {k: sum(m[k] * w for m, w in self._metrics) / total for k in sorted(keys)}
