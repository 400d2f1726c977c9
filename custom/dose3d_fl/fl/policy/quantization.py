"""Lossy model transfer: NVFlare DXO filters for float16 and for 8-bit transfer with error feedback.

**float16** (``Float16Quantizer`` / ``Float16Dequantizer``): half-precision model transfer, both ways.

NVFlare 2.9 ships ``ModelQuantizor`` / ``ModelDequantizor`` (``nvflare.app_opt.pt.quantization``), but both
modules import ``bitsandbytes`` (a CUDA library) at import time, even for plain float16, and the float16 path
also casts integer tensors (BatchNorm's ``num_batches_tracked``) to float16. These two filters do only the
float16 cast: floating tensors wider than 16 bits are sent as float16 and cast back to their own dtype on
arrival; everything else passes unchanged. The DXO's meta records the original dtypes.

**int8** (``Int8Quantizer`` at the server, ``Int8UpdateQuantizer`` at the sites, ``Int8Dequantizer`` on both
ends; ``train`` tasks only: cross-site evaluation travels in float32). Every floating tensor of at least
:data:`BLOCK` values is cut into blocks of :data:`BLOCK` values, each sent as int8 with one float32 scale (its
largest magnitude / 127, as float16; values rounded to nearest); smaller floating tensors (biases, normalisation parameters and
running statistics) travel as float16, integer tensors as int64. The int8 values of a message are packed into
one array and compressed losslessly (zlib), and the tensor names, shapes and dtypes travel once, compressed,
in the same message (:func:`encode_int8`).

* Server to site: the global model, as above (no reference needed; a site that missed rounds can decode it).
  Its rounding error does not accumulate: the server keeps the float32 global model.
* Site to server: the site's **update**, the difference between what it releases and the global model as it
  decoded it, is sent with **error feedback** (Seide et al. 2014, Karimireddy et al. 2019, "Error Feedback
  Fixes SignSGD"): the site adds what previous rounds' rounding left out (the residual) before it rounds, and
  keeps the new residual, ``update + residual - sent``, in its own state folder
  (``<cache_dir>/fl_state/int8_residual.npz``, :class:`ErrorFeedback`); the residual of another job or
  another model is not used. The result travels as ``WEIGHT_DIFF`` whatever the job's transfer type; NVFlare's
  FedAvg and this project's aggregators and update checks handle differences per result.
* Order and privacy: the site's own filters (weights-only guard, DP, receipts, payload audit) run before the
  job's quantiser, so they see and release float32; the quantiser rounds the released value, and the residual
  is computed from released values only, so quantisation with error feedback is post-processing of what DP
  released and costs no privacy. On the way in, the site's filters see the packed message:
  ``dose3d_fl.fl.policy.filters.remember_incoming`` decodes it (:func:`decoded_params`) before it remembers
  the model. A site's signed receipt names the float32 tensors it released; the server's digest is of the
  decoded difference, so the transfer log marks the receipt as a lossy transfer encoding, as with float16.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.dxo_filter import DXOFilter
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("float16", "int8")
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


# --- int8 with error feedback ------------------------------------------------------------------------------

INT8_META = "dose3d_int8"
BLOCK = 256  # values per int8 scale; floating tensors smaller than this travel as float16
RESIDUAL_NAME = "int8_residual.npz"
_PACKED_KEYS = ("int8", "scales", "float16", "int64", "layout")
# The tasks whose models travel as int8. The filters are added for all the job's tasks (NVFlare refuses filter
# task sets that overlap the site policy's) and leave the other tasks' messages as they are.
INT8_TASKS = ("train",)


def _array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def encode_int8(
    params: Mapping[str, Any], block: int = BLOCK, level: int = 6
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pack a model's tensors (numpy or torch) into the int8 message format.

    Args:
        params: tensor name -> tensor (numeric dtypes only).
        block: values per int8 scale; floating tensors with fewer values travel as float16.
        level: zlib level of the packed int8 values and the layout.

    Returns:
        ``(data, decoded)``: the message's data dict (``int8``: zlib of the int8 values, ``scales``: one
        float16 per block, ``float16``: the small floating tensors, ``int64``: the integer ones, ``layout``)
        and what :func:`decode_int8` will make of it (float32 for every floating tensor; the error feedback
        needs it).

    Raises:
        ValueError: a tensor that is not numeric (strings, objects).
    """
    layout, q_parts, scales, halves, ints, decoded = [], [], [], [], [], {}
    for name, value in params.items():
        array = _array(value)
        if array.dtype.kind == "f":
            flat = np.asarray(array, dtype=np.float32).ravel()
            if flat.size >= block:
                padded = np.zeros(-(-flat.size // block) * block, dtype=np.float32)
                padded[: flat.size] = flat
                blocks = padded.reshape(-1, block)
                # float16 scales (half the bytes of float32); a block below float16's range is sent as 0 and
                # stays in the error feedback's residual.
                scale = np.minimum(np.abs(blocks).max(axis=1) / 127.0, _FP16_MAX).astype(np.float16)
                scale = scale.astype(np.float32)
                safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
                q = np.clip(np.rint(blocks / safe[:, None]), -127, 127).astype(np.int8)
                q_parts.append(q.ravel()[: flat.size])
                scales.append(scale)
                decoded[name] = (
                    (q.astype(np.float32) * scale[:, None]).ravel()[: flat.size].reshape(array.shape)
                )
                code = "q"
            else:
                half = np.clip(flat, -_FP16_MAX, _FP16_MAX).astype(np.float16)
                halves.append(half)
                decoded[name] = half.astype(np.float32).reshape(array.shape)
                code = "h"
        elif array.dtype.kind in "biu":
            ints.append(np.asarray(array, dtype=np.int64).ravel())
            decoded[name] = np.asarray(array).copy()
            code = "i"
        else:
            raise ValueError(
                f"tensor {name!r} has dtype {array.dtype}; int8 transfer takes numeric tensors only"
            )
        layout.append([str(name), list(array.shape), str(array.dtype), code])

    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    data = {
        "int8": np.frombuffer(zlib.compress(joined(q_parts, np.int8).tobytes(), level), dtype=np.uint8),
        "scales": joined(scales, np.float16),
        "float16": joined(halves, np.float16),
        "int64": joined(ints, np.int64),
        "layout": np.frombuffer(
            zlib.compress(json.dumps({"block": block, "tensors": layout}).encode(), level), dtype=np.uint8
        ),
    }
    return data, decoded


def decode_int8(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of an :func:`encode_int8` message, each in its recorded shape and dtype (numpy).

    Raises:
        ValueError: the message is not in the format, or its parts do not add up (names what is wrong).
    """
    missing = [key for key in _PACKED_KEYS if key not in data]
    if missing:
        raise ValueError(f"not an int8 model message: no {', '.join(missing)}")
    try:
        spec = json.loads(zlib.decompress(_array(data["layout"]).tobytes()))
        q = np.frombuffer(zlib.decompress(_array(data["int8"]).tobytes()), dtype=np.int8)
    except (zlib.error, ValueError) as err:
        raise ValueError(f"int8 model message: its layout or values do not decompress ({err})") from err
    block = int(spec["block"])
    halves, ints = _array(data["float16"]).ravel(), _array(data["int64"]).ravel()
    scales = _array(data["scales"]).ravel().astype(np.float32)
    out: dict[str, np.ndarray] = {}
    offsets = {"q": 0, "s": 0, "h": 0, "i": 0}
    for name, shape, dtype, code in spec["tensors"]:
        size = int(np.prod(shape, dtype=np.int64))
        if code == "q":
            count = -(-size // block)
            values, blocks = (
                q[offsets["q"] : offsets["q"] + size],
                scales[offsets["s"] : offsets["s"] + count],
            )
            if values.size != size or blocks.size != count:
                raise ValueError(f"int8 model message: tensor {name!r} runs past the packed values")
            padded = np.zeros(count * block, dtype=np.float32)
            padded[:size] = values
            flat = (padded.reshape(count, block) * blocks[:, None]).ravel()[:size]
            offsets["q"] += size
            offsets["s"] += count
        else:
            source = halves if code == "h" else ints
            flat = source[offsets[code] : offsets[code] + size]
            if flat.size != size:
                raise ValueError(f"int8 model message: tensor {name!r} runs past the packed values")
            offsets[code] += size
        out[name] = np.asarray(flat, dtype=dtype).reshape(shape)
    if offsets["q"] != q.size or offsets["s"] != scales.size:
        raise ValueError("int8 model message: packed values left over after the last tensor")
    return out


def is_int8_message(dxo: DXO) -> bool:
    """Whether a DXO carries an int8-packed model (:func:`encode_int8`)."""
    return isinstance(dxo.data, dict) and isinstance((dxo.meta or {}).get(INT8_META), dict)


def decoded_params(dxo: DXO) -> dict[str, Any]:
    """A DXO's tensors: decoded when it is an int8 message, else its data as it is (for the site filters)."""
    return decode_int8(dxo.data) if is_int8_message(dxo) else dxo.data


class _References:
    """Per (job, site): the model a site decoded from the last ``train`` task (the reference of its update)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _models: ClassVar[dict[tuple[str, str], dict[str, np.ndarray]]] = {}

    @classmethod
    def put(cls, key: tuple[str, str], params: dict[str, np.ndarray]) -> None:
        with cls._lock:
            cls._models[key] = params

    @classmethod
    def get(cls, key: tuple[str, str]) -> dict[str, np.ndarray] | None:
        with cls._lock:
            return cls._models.get(key)


class ErrorFeedback:
    """A site's int8 rounding residual, kept in its own state folder across rounds (and site restarts).

    One file, ``folder/int8_residual.npz``: the residual of every floating tensor for one job. A residual of
    another job, or with other tensor names or shapes, is not used (it starts at zero).

    Args:
        folder: the site's state folder (``<cache_dir>/fl_state``).
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / RESIDUAL_NAME

    def load(self, job_id: str, update: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The residual saved for ``job_id`` where it fits ``update``'s floating tensors, else zeros."""
        zeros = {
            n: np.zeros(np.shape(v), np.float32) for n, v in update.items() if np.asarray(v).dtype.kind == "f"
        }
        with self._lock:
            if not self.path.is_file():
                return zeros
            try:
                with np.load(self.path, allow_pickle=False) as saved:
                    if str(saved["__job__"]) != job_id:
                        return zeros
                    names = {n.removeprefix("t/") for n in saved.files if n.startswith("t/")}
                    if names != set(zeros) or any(saved[f"t/{n}"].shape != zeros[n].shape for n in names):
                        logger.warning(
                            "int8 residual %s does not fit this model; starting from zero", self.path
                        )
                        return zeros
                    return {n: saved[f"t/{n}"].astype(np.float32) for n in zeros}
            except (OSError, ValueError, KeyError) as err:
                logger.warning("int8 residual %s unreadable (%s); starting from zero", self.path, err)
                return zeros

    def save(self, job_id: str, round_: Any, residual: Mapping[str, np.ndarray]) -> None:
        """Replace the saved residual (atomically)."""
        from dose3d_fl.files import atomic_path

        arrays = {f"t/{n}": np.asarray(v, np.float32) for n, v in residual.items()}
        with self._lock, atomic_path(self.path) as tmp, tmp.open("wb") as out:
            np.savez(
                out,
                __job__=np.array(job_id),
                __round__=np.array(-1 if round_ is None else int(round_)),
                **arrays,
            )


def _int8_task(fl_ctx: FLContext) -> bool:
    return fl_ctx.get_prop(FLContextKey.TASK_NAME) in INT8_TASKS


def _job_site(fl_ctx: FLContext) -> tuple[str, str]:
    return str(fl_ctx.get_job_id() or "job"), str(fl_ctx.get_identity_name() or "site")


class Int8Quantizer(DXOFilter):
    """Server: send the global model int8-packed (:func:`encode_int8`); put it last in the task data chain."""

    def __init__(self, block: int = BLOCK) -> None:
        super().__init__(supported_data_kinds=[DataKind.WEIGHTS], data_kinds_to_filter=[DataKind.WEIGHTS])
        self.block = block

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not _int8_task(fl_ctx) or not isinstance(dxo.data, dict) or is_int8_message(dxo):
            return None
        data, _ = encode_int8(dxo.data, self.block)
        meta = {**_meta_without_history(dxo), INT8_META: {"form": "weights"}}
        return DXO(dxo.data_kind, data=data, meta=meta)


class Int8UpdateQuantizer(DXOFilter):
    """Site: send the update (released model - decoded global model) int8-packed, with error feedback.

    Put it last among the site's result filters (after the site's own policy, before any wire meter). A
    ``WEIGHTS`` result becomes a ``WEIGHT_DIFF`` from the model this site decoded from the round's task; a
    ``WEIGHT_DIFF`` result (DIFF transfer) is quantised as it is. Without a decoded model for the job (no int8
    task arrived in this process) a ``WEIGHTS`` result is sent as int8 weights, without error feedback.

    Args:
        error_feedback: carry the rounding residual over rounds (the site's state folder).
        folder: where the residual lives; empty: the site's state folder from its ``dose3d_site.json``.
        block: values per int8 scale.
    """

    def __init__(self, error_feedback: bool = True, folder: str = "", block: int = BLOCK) -> None:
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)
        self.error_feedback = error_feedback
        self.folder = folder
        self.block = block

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not _int8_task(fl_ctx) or not isinstance(dxo.data, dict) or is_int8_message(dxo):
            return None
        job_id, site = _job_site(fl_ctx)
        meta = _meta_without_history(dxo)
        if dxo.data_kind == DataKind.WEIGHT_DIFF:
            update = {n: _array(v) for n, v in dxo.data.items()}
        else:
            reference = _References.get((job_id, site))
            if reference is None or set(reference) != set(dxo.data):
                logger.warning(
                    "%s: no decoded int8 global model for job %s; sending int8 weights", site, job_id
                )
                data, _ = encode_int8(dxo.data, self.block)
                return DXO(dxo.data_kind, data=data, meta={**meta, INT8_META: {"form": "weights"}})
            update = {n: _difference(_array(v), reference[n]) for n, v in dxo.data.items()}
        feedback = ErrorFeedback(self._folder(site, fl_ctx)) if self.error_feedback else None
        residual = feedback.load(job_id, update) if feedback else {}
        corrected = {n: (v + residual[n] if n in residual else v) for n, v in update.items()}
        data, decoded = encode_int8(corrected, self.block)
        if feedback:
            new_residual = {n: corrected[n] - decoded[n] for n in residual}
            feedback.save(job_id, shareable.get_header("current_round"), new_residual)
        return DXO(DataKind.WEIGHT_DIFF, data=data, meta={**meta, INT8_META: {"form": "diff"}})

    def _folder(self, site: str, fl_ctx: FLContext) -> Path:
        if self.folder:
            path = Path(self.folder)
            if path.is_absolute():
                return path
            return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / path
        from dose3d_fl.fl.site.config import load_site_config  # the site's own configuration, at the site

        engine = fl_ctx.get_engine()
        workspace = Path(engine.get_workspace().get_root_dir()) if engine else None
        return load_site_config(site, workspace).state_dir


def _difference(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    if value.dtype.kind == "f" or reference.dtype.kind == "f":
        return np.asarray(value, np.float32) - np.asarray(reference, np.float32)
    return np.asarray(value, np.int64) - np.asarray(reference, np.int64)


class Int8Dequantizer(DXOFilter):
    """Unpack an int8 message (put it first in the direction's chain); at a site, remember the decoded global
    model of a ``train`` task as the reference of the site's next update."""

    def __init__(self) -> None:
        super().__init__(supported_data_kinds=_KINDS, data_kinds_to_filter=_KINDS)

    def process_dxo(self, dxo: DXO, shareable: Shareable, fl_ctx: FLContext) -> DXO | None:
        if not is_int8_message(dxo):
            return None
        params = decode_int8(dxo.data)
        if dxo.data_kind == DataKind.WEIGHTS:
            _References.put(_job_site(fl_ctx), params)
        meta = {key: value for key, value in _meta_without_history(dxo).items() if key != INT8_META}
        return DXO(dxo.data_kind, data=params, meta=meta)


def quantization_filters(quantization: str) -> dict[str, Any]:
    """The job filters of a quantisation: ``{"tasks", "server_out", "client_in", "client_out", "server_in"}``.

    Raises:
        ValueError: an unknown quantisation.
    """
    from dose3d_fl.fl.policy.privacy import JOB_TASKS

    if quantization == "float16":
        return {
            "tasks": list(JOB_TASKS),
            "server_out": Float16Quantizer(),
            "client_in": Float16Dequantizer(),
            "client_out": Float16Quantizer(),
            "server_in": Float16Dequantizer(),
        }
    if quantization == "int8":
        return {
            "tasks": list(JOB_TASKS),
            "server_out": Int8Quantizer(),
            "client_in": Int8Dequantizer(),
            "client_out": Int8UpdateQuantizer(),
            "server_in": Int8Dequantizer(),
        }
    raise ValueError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
