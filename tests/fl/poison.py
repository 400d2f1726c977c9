"""Fault injection for tests: a result filter that poisons one site's update in chosen rounds.

Added to the simulated job after the site policy filters (``simulate_seg(customize=...)``); it acts only at
the named site. The simulator's client processes import it from this repository (``PYTHONPATH``).
"""

from __future__ import annotations

import numpy as np
from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey, FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from dose3d_fl.fl.policy.filters import ReceivedModels
from dose3d_fl.fl.policy.payload import as_array, like
from dose3d_fl.fl.server.update_checks import is_running_statistic


class PoisonUpdate(Filter):
    """At ``site``, in the given 0-based ``rounds`` of the train task: ``nan`` fills one tensor with NaN,
    ``scale`` multiplies the weights' update (sent minus received) by ``factor``.

    ``scale`` leaves the normalisation layers' running statistics as the site trained them: scaled, a
    running variance that fell in the round turns negative and is rejected before any norm is compared
    (``check_update``), and this attack is meant for the norm check."""

    def __init__(self, site: str, mode: str, rounds: list[int], factor: float = 100.0) -> None:
        super().__init__()
        self.site, self.mode, self.rounds, self.factor = site, mode, rounds, factor

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if (
            fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION) != FilterKey.OUT
            or fl_ctx.get_identity_name() != self.site
            or fl_ctx.get_prop(FLContextKey.TASK_NAME) != "train"
            or shareable.get_header("current_round") not in self.rounds
        ):
            return shareable
        dxo = from_shareable(shareable)
        received = ReceivedModels.get(str(fl_ctx.get_job_id())).params
        poisoned = {}
        for name, value in dxo.data.items():
            array = as_array(value)
            if array.dtype.kind != "f" or (self.mode == "scale" and is_running_statistic(name)):
                poisoned[name] = value
            elif self.mode == "nan":
                poisoned[name] = like(value, np.full_like(array, np.nan))
            else:
                base = received[name].astype(np.float64)
                poisoned[name] = like(value, (base + self.factor * (array - base)).astype(array.dtype))
        dxo.data = poisoned
        return dxo.update_shareable(shareable)
