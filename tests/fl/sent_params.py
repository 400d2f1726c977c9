"""A client output filter for tests: records what each site actually sends, after the Client API.

It runs inside NVFlare's client process, on the outgoing task result (the DXO built from the FLModel the
client script sent), and appends one JSON line per result to ``$DOSE3D_SENT_LOG``.
"""

from __future__ import annotations

import json
import os

from nvflare.apis.dxo import DataKind, MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

SENT_LOG_ENV = "DOSE3D_SENT_LOG"


class RecordSentParams(Filter):
    """Appends ``{"site", "task", "params": {name: shape}, "metrics": {...}, "meta": [...]}`` per result."""

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        dxo = from_shareable(shareable)
        is_metrics = dxo.data_kind == DataKind.METRICS
        params = {} if is_metrics else dxo.data or {}
        metrics = dxo.data if is_metrics else dxo.get_meta_prop(MetaKey.INITIAL_METRICS) or {}
        record = {
            "site": fl_ctx.get_identity_name(),
            "task": str(fl_ctx.get_prop(ReservedKey.TASK_NAME, "")),
            "data_kind": str(dxo.data_kind),
            "params": {name: list(getattr(value, "shape", ())) for name, value in params.items()},
            "metrics": {name: type(value).__name__ for name, value in metrics.items()},
            "meta": sorted(k for k in dxo.meta if k != MetaKey.INITIAL_METRICS),
        }
        with open(os.environ[SENT_LOG_ENV], "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return shareable
