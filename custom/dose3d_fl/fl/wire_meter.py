"""A benchmark-only NVFlare filter that records the size of every model message as it is sent.

Put it last in a direction's chain (after any quantisation), at the sites (results) and at the server (task
data), so it sees the bytes that travel. It writes one JSON line per message to ``wire_bytes.jsonl`` in the
workspace root of the process that sends it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.fuel.utils import fobs

from dose3d_fl.fl.policy.payload import describe_result
from dose3d_fl.fl.policy.privacy import JOB_TASKS

WIRE_LOG = "wire_bytes.jsonl"


class WireMeter(Filter):
    """Appends ``{sender, receiver, task, round, serialized_bytes, tensor_bytes, dtypes}`` per message.

    ``serialized_bytes`` is the FOBS encoding of the whole message (header, metrics and tensors), which is
    what NVFlare sends, whether inline or streamed.
    """

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        described = describe_result(shareable)
        peer = fl_ctx.get_peer_context()
        record = {
            "time": round(time.time(), 3),
            "sender": fl_ctx.get_identity_name(),
            "receiver": peer.get_identity_name() if peer else None,
            "task": fl_ctx.get_prop(ReservedKey.TASK_NAME),
            "round": shareable.get_header("current_round"),
            "serialized_bytes": len(fobs.dumps(shareable)),
            "tensor_bytes": described["tensor_bytes"],
            "dtypes": sorted({t["dtype"] for t in described["tensors"].values()}),
        }
        root = Path(fl_ctx.get_engine().get_workspace().get_root_dir())
        with (root / WIRE_LOG).open("a") as out:
            out.write(json.dumps(record) + "\n")
        return shareable


def add_wire_meters(recipe: FedAvgRecipe) -> None:
    """Record every model message's size where it leaves: last result filter at the sites, last task data
    filter at the server (after the site policy and any quantisation)."""
    recipe.add_client_output_filter(WireMeter(), tasks=list(JOB_TASKS))
    recipe.add_server_output_filter(WireMeter(), tasks=list(JOB_TASKS))


def weights_message_bytes(weights: Mapping[str, Any], quantization: str = "float32") -> int:
    """The FOBS-encoded size of a message carrying ``weights`` as the job sends a model (a ``DXO`` of weights in
    a ``Shareable``; ``int8``: packed by ``fl.policy.quantization.encode_int8``), as ``WireMeter`` counts it
    less the task headers (a few hundred bytes).

    Raises:
        ValueError: a quantization other than ``float32`` or ``int8``.
    """
    import numpy as np
    from nvflare.apis.dxo import DXO, DataKind
    from nvflare.app_common.decomposers import common_decomposers

    from dose3d_fl.fl.policy.quantization import encode_int8

    arrays = {k: np.asarray(v) for k, v in weights.items()}
    if quantization == "int8":
        data, _ = encode_int8(arrays)
    elif quantization == "float32":
        data = arrays
    else:
        raise ValueError(f"quantization {quantization!r}: float32 or int8")
    common_decomposers.register()  # numpy arrays, as NVFlare registers them in its processes
    return len(fobs.dumps(DXO(data_kind=DataKind.WEIGHTS, data=data).to_shareable()))
