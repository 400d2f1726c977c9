"""int8 model transfer with error feedback: the codec on the real cpu-small UNet, the filters in the order a
site runs them (weights-only guard, DP, the job's quantiser), the residual in the site's state folder, and the
refusal of malformed messages."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_constant import ReturnCode
from nvflare.app_common.decomposers import common_decomposers
from nvflare.fuel.utils import fobs

from dose3d_fl.fl.policy.dp import GaussianDP
from dose3d_fl.fl.policy.filters import ReceivedModels, WeightsOnlyGuard
from dose3d_fl.fl.policy.quantization import (
    BLOCK,
    INT8_META,
    RESIDUAL_NAME,
    ErrorFeedback,
    Int8Dequantizer,
    Int8Quantizer,
    Int8UpdateQuantizer,
    decode_int8,
    encode_int8,
    quantization_filters,
)
from dose3d_fl.fl.seg_job import SegJobConfig, export_seg_job
from dose3d_fl.seg.network import SeededUNet, network_args
from dose3d_fl.seg.profiles import get_profile
from tests.fl.site_messages import IN, OUT, context, task_data, train_result


def _cpu_small() -> dict[str, torch.Tensor]:
    net = SeededUNet(seed=0, **network_args(get_profile("cpu-small")))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _update(model: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        k: torch.from_numpy((rng.standard_normal(tuple(v.shape)) * scale).astype(np.float32))
        if v.is_floating_point()
        else torch.zeros_like(v)
        for k, v in model.items()
    }


def _wire_bytes(dxo: DXO) -> int:
    common_decomposers.register()
    return len(fobs.dumps(dxo.to_shareable()))


def test_the_codec_restores_every_tensor_within_half_a_step_in_a_quarter_of_the_bytes() -> None:
    model = {k: v.numpy() for k, v in _cpu_small().items()}
    data, decoded = encode_int8(model)
    restored = decode_int8(data)

    assert list(restored) == list(model)
    for name, value in model.items():
        assert restored[name].shape == value.shape and restored[name].dtype == value.dtype
        np.testing.assert_array_equal(restored[name], decoded[name].astype(value.dtype))
        if value.dtype.kind != "f":
            np.testing.assert_array_equal(restored[name], value)  # integer buffers exactly
        elif value.size >= BLOCK:
            step = np.abs(value).max() / 127  # at most the tensor's largest block scale
            assert np.abs(restored[name] - value).max() <= step / 2 * 1.01
        else:
            np.testing.assert_allclose(restored[name], value, rtol=1e-3, atol=1e-4)  # float16
    fp32 = _wire_bytes(DXO(DataKind.WEIGHTS, data=model))
    int8 = _wire_bytes(DXO(DataKind.WEIGHTS, data=data, meta={INT8_META: {"form": "weights"}}))
    assert int8 <= 0.25 * fp32, f"{int8} B is {int8 / fp32:.3f} of float32's {fp32} B"


def test_a_malformed_message_is_refused_with_what_is_wrong() -> None:
    data, _ = encode_int8({"w": np.ones(600, np.float32), "n": np.array(3)})
    with pytest.raises(ValueError, match="no layout"):
        decode_int8({k: v for k, v in data.items() if k != "layout"})
    with pytest.raises(ValueError, match="do not decompress"):
        decode_int8({**data, "int8": np.frombuffer(b"not zlib", np.uint8)})
    short = np.frombuffer(zlib.compress(np.ones(300, np.int8).tobytes()), np.uint8)
    with pytest.raises(ValueError, match="tensor 'w' runs past the packed values"):
        decode_int8({**data, "int8": short})
    with pytest.raises(ValueError, match="numeric tensors only"):
        encode_int8({"name": np.array(["a"])})


def _site_round(
    global_model: dict[str, torch.Tensor],
    local_change: dict[str, torch.Tensor],
    folder: Path,
    job: str,
    round_: int,
    transfer: str = "full",
    dp: GaussianDP | None = None,
) -> tuple[dict[str, np.ndarray], DXO]:
    """One round as it runs: server quantiser; at the site the guard (and DP) then the job's dequantiser; the
    site trains; the site's guard (and DP), then the job's update quantiser; the server's dequantiser."""
    incoming = Int8Quantizer().process(task_data(global_model, round_), context(OUT, "train", job))
    site_in = [WeightsOnlyGuard()] + (
        [GaussianDP(dp.clip_norm, dp.noise_multiplier, 1e30, ledger=dp.ledger)] if dp else []
    )
    for data_filter in (*site_in, Int8Dequantizer()):
        incoming = data_filter.process(incoming, context(IN, "train", job))
    as_decoded = {k: torch.as_tensor(v) for k, v in from_shareable(incoming).data.items()}
    if transfer == "full":
        result = train_result({k: v + local_change[k] for k, v in as_decoded.items()}, metrics={})
    else:
        result = train_result(local_change, metrics={})
        dxo = from_shareable(result)
        result = DXO(DataKind.WEIGHT_DIFF, data=dxo.data, meta=dxo.meta).to_shareable()
    for result_filter in (WeightsOnlyGuard(), *([dp] if dp else []), Int8UpdateQuantizer(folder=str(folder))):
        result = result_filter.process(result, context(OUT, "train", job))
        assert result.get_return_code() in (None, ReturnCode.OK), result_filter
    sent = from_shareable(result)
    arrived = from_shareable(Int8Dequantizer().process(result, context(IN, "train", job, site="server")))
    return {k: np.asarray(v) for k, v in as_decoded.items()}, arrived if sent.get_meta_prop(
        INT8_META
    ) else sent


@pytest.mark.parametrize("transfer", ["full", "diff"])
def test_a_site_sends_its_update_as_an_int8_difference_that_the_guard_allowed(
    tmp_path: Path, transfer: str
) -> None:
    global_model = _cpu_small()
    change = _update(global_model, 1e-3, seed=1)
    as_decoded, arrived = _site_round(global_model, change, tmp_path, f"job-{transfer}", 0, transfer)

    assert arrived.data_kind == DataKind.WEIGHT_DIFF and arrived.get_meta_prop(INT8_META) is None
    floats = [k for k, v in global_model.items() if v.is_floating_point()]
    error = max(float(np.abs(arrived.data[k] - change[k].numpy()).max()) for k in floats)
    largest = max(float(change[k].abs().max()) for k in floats)
    assert error <= largest / 127, "each value within one int8 step of the true update"
    # What the site decoded differs from the float32 global model by at most half a step of its blocks.
    assert max(float(np.abs(as_decoded[k] - global_model[k].numpy()).max()) for k in floats) < 2e-3
    assert (tmp_path / RESIDUAL_NAME).is_file()


def test_error_feedback_keeps_the_sum_of_what_was_sent_on_the_sum_of_the_updates(tmp_path: Path) -> None:
    """Without feedback the rounding errors of every round add up; with it the total error stays within one
    round's rounding, because what a round leaves out is sent in the next."""
    rng = np.random.default_rng(0)
    totals = {}
    for feedback in (True, False):
        folder = tmp_path / str(feedback)
        true_sum, sent_sum = np.zeros(4096), np.zeros(4096)
        for round_ in range(8):
            # A small drift, the same every round, under one int8 step: rounding alone would lose it for good.
            change = (3e-5 + rng.standard_normal(4096) * 1e-3).astype(np.float32)
            result = DXO(DataKind.WEIGHT_DIFF, data={"w": change, "n": np.array(0)}).to_shareable()
            result.set_header("current_round", round_)
            quantizer = Int8UpdateQuantizer(error_feedback=feedback, folder=str(folder))
            sent = quantizer.process(result, context(OUT, "train", "job-ef"))
            arrived = from_shareable(Int8Dequantizer().process(sent, context(IN, "train", "job-ef")))
            true_sum += change
            sent_sum += arrived.data["w"]
        totals[feedback] = float(np.linalg.norm(sent_sum - true_sum))
    assert totals[True] < totals[False] / 2, totals
    assert (tmp_path / "True" / RESIDUAL_NAME).is_file() and not (tmp_path / "False").exists()


def test_the_residual_of_another_job_or_model_is_not_used(tmp_path: Path) -> None:
    feedback = ErrorFeedback(tmp_path)
    feedback.save("job-a", 3, {"w": np.full(4, 0.5, np.float32)})
    update = {"w": np.zeros(4, np.float32), "n": np.array(1)}
    np.testing.assert_array_equal(feedback.load("job-a", update)["w"], 0.5)
    assert not feedback.load("job-b", update)["w"].any()
    assert not feedback.load("job-a", {"w": np.zeros(5, np.float32)})["w"].any()
    (tmp_path / RESIDUAL_NAME).write_bytes(b"garbage")
    assert not feedback.load("job-a", update)["w"].any()


def test_dp_releases_float32_and_int8_sends_that_release(tmp_path: Path) -> None:
    """DP runs first (the site's scope) and remembers the model as the site decoded it: the update it clips is
    the site's true update, and the int8 difference that leaves is its release."""
    global_model = _cpu_small()
    change = _update(global_model, 1e-3, seed=2)
    dp = GaussianDP(1.0, 1e-6, 1e30, ledger=str(tmp_path / "ledger.json"), seed=0)
    ReceivedModels._by_job.pop("job-dp8", None)
    _, arrived = _site_round(global_model, change, tmp_path / "state", "job-dp8", 0, "full", dp)
    true_norm = float(np.sqrt(sum(float(torch.sum(v.double() ** 2)) for v in change.values())))
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["releases"][0]["update_norm"] == pytest.approx(true_norm, rel=1e-3)
    sent_norm = float(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in arrived.data.values())))
    assert sent_norm == pytest.approx(true_norm, rel=1e-2)
    assert arrived.get_meta_prop("dp_epsilon") is not None


def test_the_job_carries_the_int8_filters_which_pack_training_messages_only(tmp_path: Path) -> None:
    filters = quantization_filters("int8")
    assert filters["tasks"] == ["train", "validate", "submit_model"]  # the site policy's task set (NVFlare)
    model = {k: v.numpy() for k, v in _cpu_small().items()}
    for task in ("validate", "submit_model"):  # cross-site evaluation travels as it is
        for quantizer in (filters["server_out"], filters["client_out"]):
            unchanged = quantizer.process(task_data(model), context(OUT, task, "job-xsite"))
            assert from_shareable(unchanged).get_meta_prop(INT8_META) is None
    job = export_seg_job(tmp_path, SegJobConfig(quantization="int8", cross_site_evaluation=False))
    text = "".join(p.read_text() for p in job.rglob("config_fed_*.json"))
    for name in ("Int8Quantizer", "Int8Dequantizer", "Int8UpdateQuantizer"):
        assert f"dose3d_fl.fl.policy.quantization.{name}" in text
    with pytest.raises(ValueError, match="not one of float16, int8"):
        SegJobConfig(quantization="int4")
