"""A client output filter for tests: measures the update each site actually sends, after its site filters.

Added as a job filter after the site policy (and after float16 quantisation when the job uses it), it runs in
the simulated site's process and appends one JSON line per ``train`` result to ``$DOSE3D_SENT_UPDATES``: the
site, the round, the DXO kind, the L2 norm of the update the server can read from it (a DIFF result's tensors;
a FULL result's tensors minus the global model the site received, from the site policy's memory), the number
of floating-point coordinates, the dtypes, and the filter history; or ``"error": true`` for an error reply.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

from dose3d_fl.fl.policy.filters import ReceivedModels, job_id_of, site_of, task_of
from dose3d_fl.fl.policy.payload import as_array

SENT_UPDATES_ENV = "DOSE3D_SENT_UPDATES"


class MeasureSentUpdate(Filter):
    """Appends the norm of each sent update (see the module docstring); the result passes unchanged."""

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if task_of(fl_ctx) != "train":
            return shareable
        record: dict = {"site": site_of(fl_ctx), "round": shareable.get_header("current_round")}
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            record["error"] = True
        else:
            received = ReceivedModels.get(job_id_of(fl_ctx))
            difference = dxo.data_kind == DataKind.WEIGHT_DIFF
            total, coordinates, dtypes = 0.0, 0, set()
            for name, value in dxo.data.items():
                array = as_array(value)
                dtypes.add(str(array.dtype))
                if array.dtype.kind != "f":
                    continue
                update = array.astype(np.float64)
                if not difference:
                    update = update - received.params[name].astype(np.float64)
                total += float(np.sum(update**2))
                coordinates += update.size
            record |= {
                "kind": dxo.data_kind,
                "norm": math.sqrt(total),
                "coordinates": coordinates,
                "dtypes": sorted(dtypes),
                "filters": list(dxo.get_filter_history() or []),
            }
        with open(os.environ[SENT_UPDATES_ENV], "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return shareable
