"""Site-enforced NVFlare filters: the weights-only guard and the payload audit.

A site lists these in its own ``local/privacy.json`` scope (``dose3d_fl.fl.policy.privacy`` writes it; the
template is ``sites/local/privacy.json``). NVFlare applies a site's scope filters to every job that runs in
that scope, before the job's own filters, and a job cannot remove them; with ``default_scope`` set and no
other scope defined, every job runs in it.

Each filter is listed twice in the scope: once as a *task data* filter (direction ``in``: it sees the model
the server sends and remembers its tensor names, shapes and values for the job) and once as a *task result*
filter (direction ``out``: it checks or records what the site is about to send). Both instances run in the
site's job process and share what they remember through :class:`ReceivedModels`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey, FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.fuel.utils import fobs

from dose3d_fl.fl.policy.metrics import declared_metrics
from dose3d_fl.fl.policy.payload import (
    WEIGHT_KINDS,
    TensorSpec,
    as_array,
    check_weights_only,
    describe_result,
    model_signature,
)
from dose3d_fl.fl.policy.quantization import decoded_params

logger = logging.getLogger("dose3d.site_policy")


@dataclass
class ReceivedModel:
    """The last model a site received for one job: its signature and, for training tasks, its values."""

    signature: dict[str, TensorSpec] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


class ReceivedModels:
    """Per-job memory of the received model, shared by the data-side and result-side filter instances."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _by_job: ClassVar[dict[str, ReceivedModel]] = {}

    @classmethod
    def remember(cls, job_id: str, params: dict[str, Any], keep_values: bool) -> None:
        signature = model_signature(params)
        if not signature:
            return
        with cls._lock:
            entry = cls._by_job.setdefault(job_id, ReceivedModel())
            entry.signature = signature
            if keep_values:
                entry.params = {
                    n: np.array(as_array(v), copy=True) for n, v in params.items() if n in signature
                }

    @classmethod
    def get(cls, job_id: str) -> ReceivedModel | None:
        with cls._lock:
            return cls._by_job.get(job_id)


def direction(fl_ctx: FLContext) -> str | None:
    """``in`` for task data arriving at the site, ``out`` for a result leaving it."""
    return fl_ctx.get_prop(FLContextKey.FILTER_DIRECTION)


def job_id_of(fl_ctx: FLContext) -> str:
    return str(fl_ctx.get_job_id() or "job")


def site_of(fl_ctx: FLContext) -> str:
    return str(fl_ctx.get_identity_name() or "site")


def task_of(fl_ctx: FLContext) -> str:
    return str(fl_ctx.get_prop(FLContextKey.TASK_NAME) or "?")


def remember_incoming(shareable: Shareable, fl_ctx: FLContext) -> None:
    """Record the model in incoming task data (kept by value for ``train`` tasks, where DP needs it)."""
    try:
        dxo = from_shareable(shareable)
    except ValueError:
        return
    if dxo.data_kind in WEIGHT_KINDS and isinstance(dxo.data, dict):
        # An int8 message (the job's transfer encoding) arrives packed: the model is what it decodes to.
        try:
            params = decoded_params(dxo)
        except ValueError as err:  # the job's dequantiser refuses the message with this reason
            logger.error("%s: %s", site_of(fl_ctx), err)
            return
        ReceivedModels.remember(job_id_of(fl_ctx), params, keep_values=task_of(fl_ctx) == "train")


def refuse(fl_ctx: FLContext, what: str, reason: str) -> Shareable:
    """Replace a result by a bare error reply and log the reason at the site only (it may name job tensors)."""
    logger.error(
        "%s: %s refused the %s result of job %s: %s",
        site_of(fl_ctx),
        what,
        task_of(fl_ctx),
        job_id_of(fl_ctx),
        reason,
    )
    return make_reply(ReturnCode.TASK_RESULT_FILTER_ERROR)


class WeightsOnlyGuard(Filter):
    """Lets a result leave only if it is model weights (names and shapes of the received model) + the job's
    declared scalar metrics.

    The rule is :func:`dose3d_fl.fl.policy.payload.check_weights_only`; the metric names are those the job
    declares (:func:`dose3d_fl.fl.policy.metrics.declared_metrics`), narrowed to ``metrics`` when the site
    lists its own. A refused result is replaced by an error reply carrying no data; the reason is logged at
    the site (logger ``dose3d.site_policy``).

    Args:
        metrics: the site's own allow-list of metric names (``privacy.json``); ``None``: the job's declaration.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.metrics = None if metrics is None else frozenset(metrics)

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if direction(fl_ctx) == FilterKey.IN:
            remember_incoming(shareable, fl_ctx)
            return shareable
        received = ReceivedModels.get(job_id_of(fl_ctx))
        allowed = frozenset(declared_metrics(fl_ctx) or ())
        if self.metrics is not None:
            allowed &= self.metrics
        reason = check_weights_only(shareable, received.signature if received else None, allowed)
        if reason:
            return refuse(fl_ctx, "weights-only guard", reason)
        with contextlib.suppress(ValueError):  # a bare reply has no DXO to stamp
            from_shareable(shareable).add_filter_history(type(self).__name__)
        return shareable


class PayloadAudit(Filter):
    """Appends one JSON line per result this site sends: kind, tensors, bytes, sha256, metrics, headers.

    Put it last in the scope so it records what leaves after every site filter.

    Args:
        path: the JSONL file, relative to the site's workspace root unless absolute.
        keep_payloads: also write each message next to the log, for an offline scan of every byte sent: the
            FOBS encoding NVFlare sends, followed by the raw bytes of every tensor (FOBS may stream torch
            tensors separately instead of inlining them). Off by default (model-sized files per round).
    """

    def __init__(self, path: str = "payload_audit.jsonl", keep_payloads: bool = False) -> None:
        super().__init__()
        self.path = path
        self.keep_payloads = keep_payloads
        self._count = 0

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if direction(fl_ctx) == FilterKey.IN:
            return shareable
        target = self._resolve(fl_ctx)
        payload = fobs.dumps(shareable)
        record = {
            "time": round(time.time(), 3),
            "job_id": job_id_of(fl_ctx),
            "site": site_of(fl_ctx),
            "task": task_of(fl_ctx),
            "round": shareable.get_header("current_round"),
            "return_code": shareable.get_return_code(),
            "serialized_bytes": len(payload),
            **describe_result(shareable),
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.keep_payloads:
            self._count += 1
            dump = target.with_name(f"{target.stem}_payloads") / f"{record['job_id']}_{self._count:05d}.fobs"
            dump.parent.mkdir(parents=True, exist_ok=True)
            dump.write_bytes(payload + _raw_tensor_bytes(shareable))
            record["payload_file"] = dump.name
        with target.open("a") as out:
            out.write(json.dumps(record, default=str) + "\n")
        return shareable

    def _resolve(self, fl_ctx: FLContext) -> Path:
        path = Path(self.path)
        if path.is_absolute():
            return path
        return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / path


def _raw_tensor_bytes(shareable: Shareable) -> bytes:
    try:
        data = from_shareable(shareable).data
    except ValueError:
        return b""
    if not isinstance(data, dict):
        return b""
    arrays = (as_array(data[name]) for name in sorted(data))
    return b"".join(np.asarray(a, order="C").tobytes() for a in arrays if a is not None)
