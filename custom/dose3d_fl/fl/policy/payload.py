"""What a site sends, described and checked: the rules behind the weights-only guard and the payload audit.

A task result leaving a site is an NVFlare ``Shareable`` holding one DXO. This module answers two questions
about it without any NVFlare runtime: *what is in it* (:func:`describe_result`: keys, dtypes, shapes, bytes,
sha256, for the audit) and *may it leave* (:func:`check_weights_only`: ``None`` or the one-line reason to
refuse it). Both are plain functions so they can be tested on real ``Shareable`` objects built with
NVFlare's own ``FLModelUtils``.

What may leave (the weights-only rule):

- a DXO of kind ``WEIGHTS`` / ``WEIGHT_DIFF`` whose tensors all carry names **and** shapes of the model this
  site received for the job (a subset is allowed: a job may keep some tensors local), with floating-point
  dtypes; or a DXO of kind ``METRICS``;
- metrics: only the names the job declares (``dose3d_fl.fl.policy.metrics``; none when it declares none), so
  at most as many entries as names (and never more than :data:`MAX_METRICS`), plain ``int``/``float`` values;
- DXO meta: only the keys in :data:`ALLOWED_META_KEYS`, with scalar values (or the metrics dict, or the
  list of filter names NVFlare records);
- headers: short scalar values only (NVFlare's own routing headers).

Anything else (an unknown or re-shaped tensor, an undeclared metric, strings, nested objects, bytes,
image-sized arrays) is refused.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from nvflare.apis.dxo import DataKind, MetaKey, from_shareable
from nvflare.apis.shareable import ReservedHeaderKey, Shareable

# numpy dtype kinds of model tensors: bool, signed/unsigned integer, float (no strings, bytes or objects).
# Integer and float may differ between what was received and what is sent (FedAvg averages a BatchNorm
# batch counter into a float).
NUMERIC_KINDS = "biuf"
WEIGHT_KINDS = frozenset({DataKind.WEIGHTS, DataKind.WEIGHT_DIFF})
MAX_METRICS = 64
MAX_NAME_LENGTH = 64
MAX_HEADER_TEXT = 256
# DXO meta keys a result may carry: the aggregation weight, the metrics NVFlare files under INITIAL_METRICS,
# NVFlare's filter history, and what dose3d's own site filters add (differential privacy accounting).
ALLOWED_META_KEYS = frozenset(
    {
        MetaKey.NUM_STEPS_CURRENT_ROUND,
        MetaKey.INITIAL_METRICS,
        MetaKey.FILTER_HISTORY,
        MetaKey.PROCESSED_ALGORITHM,
        "dp_epsilon",
        "dp_delta",
    }
)
_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class TensorSpec:
    """Name-independent description of one tensor: shape and dtype (as numpy spells it)."""

    shape: tuple[int, ...]
    dtype: str


def as_array(value: Any) -> np.ndarray | None:
    """The value as a numpy array when it is a tensor, an array or a numpy scalar, else ``None``.

    Torch tensors are recognised without importing torch; numpy scalars (a 0-d tensor after conversion, e.g. a
    BatchNorm batch counter) count as 0-d arrays.
    """
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch here
        return value.detach().cpu().numpy()
    return None


def like(original: Any, array: np.ndarray) -> Any:
    """``array`` as the same kind of object as ``original``: a torch tensor if it was one, else the array."""
    if hasattr(original, "detach"):
        import torch

        return torch.from_numpy(np.asarray(array, order="C"))
    return array


def model_signature(params: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of a model's tensors (non-tensor entries are ignored)."""
    signature = {}
    for name, value in params.items():
        array = as_array(value)
        if array is not None:
            signature[str(name)] = TensorSpec(tuple(int(n) for n in array.shape), str(array.dtype))
    return signature


def params_digest(params: Mapping[str, Any]) -> tuple[str, int]:
    """sha256 over the tensors in name order (name, shape, dtype and raw bytes), and their total bytes."""
    digest = hashlib.sha256()
    total = 0
    for name in sorted(params):
        array = as_array(params[name])
        if array is None:
            continue
        data = np.asarray(array, order="C")
        digest.update(f"{name}|{data.shape}|{data.dtype}|".encode())
        digest.update(data.tobytes())
        total += data.nbytes
    return digest.hexdigest(), total


def describe_result(shareable: Shareable) -> dict[str, Any]:
    """What a result carries, for the payload audit: DXO kind, tensors, metrics and meta keys, headers.

    Returns:
        ``{"kind", "tensors": {name: {"dtype", "shape", "bytes"}}, "tensor_bytes", "sha256", "metrics",
        "meta_keys", "header_keys", "other_keys"}``; ``kind`` is ``None`` when there is no DXO.
    """
    other_keys = sorted(str(k) for k in shareable if k not in (ReservedHeaderKey.HEADERS, "DXO"))
    headers = shareable.get(ReservedHeaderKey.HEADERS) or {}
    record: dict[str, Any] = {"other_keys": other_keys, "header_keys": sorted(str(k) for k in headers)}
    try:
        dxo = from_shareable(shareable)
    except ValueError:
        return {**record, "kind": None, "tensors": {}, "tensor_bytes": 0, "sha256": None, "metrics": {}}
    data = dxo.data if isinstance(dxo.data, Mapping) else {}
    tensors = {}
    for name, value in data.items():
        array = as_array(value)
        if array is not None:
            tensors[str(name)] = {
                "dtype": str(array.dtype),
                "shape": list(array.shape),
                "bytes": int(array.nbytes),
            }
    sha, nbytes = params_digest(data) if tensors else (None, 0)
    metrics = dxo.data if dxo.data_kind == DataKind.METRICS else (dxo.meta or {}).get(MetaKey.INITIAL_METRICS)
    return {
        **record,
        "kind": dxo.data_kind,
        "tensors": tensors,
        "tensor_bytes": nbytes,
        "sha256": sha,
        "metrics": {str(k): _plain(v) for k, v in (metrics or {}).items()}
        if isinstance(metrics, Mapping)
        else {},
        "meta_keys": sorted(str(k) for k in (dxo.meta or {})),
    }


def check_weights_only(
    shareable: Shareable,
    signature: Mapping[str, TensorSpec] | None,
    allowed_metrics: Collection[str] = (),
) -> str | None:
    """Whether a task result may leave the site under the weights-only rule (module docstring).

    Args:
        shareable: the result as the site is about to send it.
        signature: the tensors of the model this site last received for the job (:func:`model_signature`);
            ``None`` when it received none, in which case no tensor may leave.
        allowed_metrics: the metric names the job declares (``dose3d_fl.fl.policy.metrics``); empty: no
            metric may leave.

    Returns:
        ``None`` when the result may leave, else a one-line reason naming what is wrong.
    """
    extra = [str(k) for k in shareable if k not in (ReservedHeaderKey.HEADERS, "DXO")]
    if extra:
        return f"result carries entries outside the DXO: {sorted(extra)[:5]}"
    reason = _check_headers(shareable.get(ReservedHeaderKey.HEADERS) or {})
    if reason:
        return reason
    if "DXO" not in shareable:
        return None  # a bare reply (an error code or an empty result) carries nothing
    try:
        dxo = from_shareable(shareable)
    except ValueError as err:
        return f"result is not a valid DXO: {err}"
    reason = _check_meta(dxo.meta or {}, allowed_metrics)
    if reason:
        return reason
    if dxo.data_kind == DataKind.METRICS:
        return _check_metrics(dxo.data, "metrics", allowed_metrics)
    if dxo.data_kind not in WEIGHT_KINDS:
        return f"DXO kind {dxo.data_kind!r} is not model weights or metrics"
    return _check_tensors(dxo.data, signature)


def _check_tensors(data: Any, signature: Mapping[str, TensorSpec] | None) -> str | None:
    if not isinstance(data, Mapping):
        return f"weights must be a name -> tensor mapping, got {type(data).__name__}"
    if not signature:
        return "result carries tensors but this site received no model for the job"
    for name, value in data.items():
        array = as_array(value)
        if array is None:
            return f"entry {str(name)[:MAX_NAME_LENGTH]!r} is {type(value).__name__}, not a tensor"
        spec = signature.get(str(name))
        if spec is None:
            return f"tensor {str(name)[:MAX_NAME_LENGTH]!r} {tuple(array.shape)} is not in the received model"
        if tuple(array.shape) != spec.shape:
            return f"tensor {name!r} has shape {tuple(array.shape)}, the received model has {spec.shape}"
        if array.dtype.kind not in NUMERIC_KINDS:
            return f"tensor {name!r} has dtype {array.dtype}: only numeric tensors may leave"
    return None


def _check_metrics(metrics: Any, where: str, allowed: Collection[str]) -> str | None:
    if not isinstance(metrics, Mapping):
        return f"{where} must be a name -> number mapping, got {type(metrics).__name__}"
    if len(metrics) > MAX_METRICS:
        return f"{where} has {len(metrics)} entries (at most {MAX_METRICS})"
    for name, value in metrics.items():
        if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
            return f"{where} name {str(name)[:MAX_NAME_LENGTH]!r} is not a short string"
        if name not in allowed:
            declared = ", ".join(sorted(allowed)) if allowed else "none"
            return f"metric {name!r} is not on the job's metric allow-list ({declared})"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"{where} {name!r} is {type(value).__name__}, not a number"
    return None


def _check_meta(meta: Mapping[str, Any], allowed_metrics: Collection[str]) -> str | None:
    for key, value in meta.items():
        if key not in ALLOWED_META_KEYS:
            return f"DXO meta key {str(key)[:MAX_NAME_LENGTH]!r} is not allowed"
        if key == MetaKey.INITIAL_METRICS:
            reason = _check_metrics(value, "metrics", allowed_metrics)
        elif key == MetaKey.FILTER_HISTORY:
            ok = isinstance(value, list) and all(isinstance(v, str) and len(v) <= 128 for v in value)
            reason = None if ok else "DXO filter history must be a list of filter names"
        else:
            reason = None if _short_scalar(value) else f"DXO meta {key!r} is not a scalar"
        if reason:
            return reason
    return None


def _check_headers(headers: Mapping[str, Any]) -> str | None:
    for key, value in headers.items():
        if key == ReservedHeaderKey.PEER_CTX:
            continue  # NVFlare's own peer context, attached to every message by the framework
        if not _short_scalar(value):
            return f"header {str(key)[:MAX_NAME_LENGTH]!r} carries {type(value).__name__}, not a short scalar"
    return None


def _short_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_HEADER_TEXT
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return True
    return isinstance(value, (bool, type(None)))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, _SCALARS) else str(type(value).__name__)
