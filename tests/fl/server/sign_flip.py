"""A Byzantine site for tests and ``benchmarks/robust_aggregation.py``: it sends its update sign-flipped and scaled.

Added to a simulated job at one site, in both directions (``add_sign_flip``): on the way in it keeps the
global model the site received for ``train``; on the way out it replaces the site's update ``u`` (local minus
received) by ``factor * u`` (``factor = -10``: sign-flipped, ten times as long), every round. With FULL
transfer the site then sends ``received + factor * u``; with DIFF transfer (the result already is ``u``) it
sends ``factor * u``.

What is changed: the floating-point weights and the BatchNorm running means. What is not: running variances
(a flipped variance update turns negative and ``check_update`` rejects it before any norm is compared, which
is not the attack under test) and integer buffers (``num_batches_tracked``). The reported steps and metrics
stay honest. The simulated sites import this module from the repository (``PYTHONPATH``).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey, FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from dose3d_fl.fl.policy.payload import as_array, like
from dose3d_fl.fl.policy.privacy import JOB_TASKS


class SignFlipUpdate(Filter):
    """At ``site``, every ``train`` result: the update multiplied by ``factor`` (see the module docstring)."""

    # The job gives the input and the output filter list an instance each: they share what was received.
    _received: ClassVar[dict[str, dict[str, np.ndarray]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, site: str, factor: float = -10.0) -> None:
        super().__init__()
        self.site, self.factor = site, factor

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if fl_ctx.get_identity_name() != self.site or fl_ctx.get_prop(FLContextKey.TASK_NAME) != "train":
            return shareable
        dxo = from_shareable(shareable)
        if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF) or not isinstance(dxo.data, dict):
            return shareable
        if fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION) == FilterKey.IN:
            with self._lock:
                self._received[self.site] = {n: np.array(as_array(v), copy=True) for n, v in dxo.data.items()}
            return shareable
        difference = dxo.data_kind == DataKind.WEIGHT_DIFF
        dxo.data = {name: self._flip(name, value, difference) for name, value in dxo.data.items()}
        return dxo.update_shareable(shareable)

    def _flip(self, name: str, value: Any, difference: bool) -> Any:
        array = as_array(value)
        if array is None or array.dtype.kind != "f" or str(name).endswith("running_var"):
            return value
        if difference:
            return like(value, (self.factor * array.astype(np.float64)).astype(array.dtype))
        with self._lock:
            base = self._received[self.site][name].astype(np.float64)
        return like(value, (base + self.factor * (array - base)).astype(array.dtype))


def add_sign_flip(recipe: Any, site: str, factor: float = -10.0) -> None:
    """Make ``site`` of a simulated seg job send ``factor`` times its update every round."""
    # Every site gets the filter, for the job's task set (the recipe's client app and the site policy's
    # filters cover all sites and tasks); it acts at ``site`` on ``train`` only.
    attack = SignFlipUpdate(site, factor)
    recipe.add_client_input_filter(attack, tasks=list(JOB_TASKS))
    recipe.add_client_output_filter(attack, tasks=list(JOB_TASKS))
