"""Half-precision model transfer: NVFlare DXO filters that send float32 tensors as float16 and restore them.

NVFlare 2.9 ships ``ModelQuantizor`` / ``ModelDequantizor`` (``nvflare.app_opt.pt.quantization``), but both
modules import ``bitsandbytes`` (a CUDA library) at import time, even for plain float16, and the float16 path
also casts integer tensors (BatchNorm's ``num_batches_tracked``) to float16. These two filters do only the
float16 cast: floating tensors wider than 16 bits are sent as float16 and cast back to their own dtype on
arrival; everything else passes unchanged. The DXO's meta records the original dtypes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

QUANTIZATIONS = ("float16",)
META_KEY = "dose3d_float16_source_dtypes"
_KINDS = [DataKind.WEIGHTS, DataKind.WEIGHT_DIFF]
_FP16_MAX = float(np.finfo(np.float16).max)


def _dtype_name(value: Any) -> str | None:
    dtype = getattr(value, "dtype", None)
    return None if dtype is None else str(dtype).removeprefix("torch.")


def _is_wide_float(value: Any) -> bool:
    name = _dtype_name(value) or ""
    return name in ("float32", "float64")


def to_float16(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """float32/float64 tensors (numpy or torch) clipped to float16's range and cast; the others unchanged.

    Returns:
        The new params and the source dtype of every cast tensor.
    """
    out, sources = dict(params), {}
    for name, value in params.items():
        if not _is_wide_float(value):
            continue
        sources[name] = _dtype_name(value)
        if isinstance(value, (np.ndarray, np.generic)):
            # np.asarray: numpy scalars become 0-d arrays (FOBS serialises arrays, not float16 scalars).
            out[name] = np.asarray(np.clip(value, -_FP16_MAX, _FP16_MAX), dtype=np.float16)
        else:  # a torch tensor
            out[name] = value.clamp(-_FP16_MAX, _FP16_MAX).half()
    return out, sources


def from_float16(params: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    """Cast the tensors named in ``sources`` back to their recorded dtype."""
    out = dict(params)
    for name, dtype in sources.items():
        value = out.get(name)
        if value is None:
            continue
        if isinstance(value, (np.ndarray, np.generic)):
            out[name] = np.asarray(value, dtype=dtype)
        else:
            import torch  # only where torch tensors travel

            out[name] = value.to(getattr(torch, dtype))
    return out


class Float16Quantizer(DXOFilter):
    """Send model tensors as float16 (put it last among a direction's filters).

    The filtered DXO is a new one: NVFlare may hand the same task data to several sites' filter chains, and
    changing its meta in place would leak into the others.
    """

    def __init__(self) -> None:
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not isinstance(dxo.data, dict):
            return None
        params, sources = to_float16(dxo.data)
        if not sources:
            return None
        return DXO(dxo.data_kind, data=params, meta={**_meta_without_history(dxo), META_KEY: sources})


class Float16Dequantizer(DXOFilter):
    """Restore tensors a :class:`Float16Quantizer` sent (put it first among a direction's filters)."""

    def __init__(self) -> None:
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        sources = (dxo.meta or {}).get(META_KEY)
        if not sources or not isinstance(dxo.data, dict):
            return None
        meta = {key: value for key, value in _meta_without_history(dxo).items() if key != META_KEY}
        return DXO(dxo.data_kind, data=from_float16(dxo.data, sources), meta=meta)


def _meta_without_history(dxo: DXO) -> dict[str, Any]:
    """The DXO's meta without its filter history: NVFlare's ``DXOFilter`` copies the history into the new DXO
    itself, so a copied history would be listed twice (and the list shared with the original DXO)."""
    return {key: value for key, value in (dxo.meta or {}).items() if key != MetaKey.FILTER_HISTORY}
