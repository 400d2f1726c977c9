"""float16 model transfer: floating tensors travel as float16 and come back in their own dtype."""

from __future__ import annotations

import numpy as np
import torch
from nvflare.apis.dxo import DXO, DataKind, from_shareable
from nvflare.apis.fl_context import FLContext

from dose3d_fl.fl.policy.quantization import Float16Dequantizer, Float16Quantizer, from_float16, to_float16


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "bn.running_var": np.array([1e5, 2.0], dtype=np.float32),  # above float16's max: clipped
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "scalar": np.float64(0.25),
    }


def test_floats_are_halved_and_restored_and_integers_untouched() -> None:
    params = _params()
    halved, sources = to_float16(params)

    assert halved["conv.weight"].dtype == np.float16
    assert halved["bn.num_batches_tracked"].dtype == np.int64 and int(halved["bn.num_batches_tracked"]) == 7
    assert isinstance(halved["scalar"], np.ndarray)  # FOBS serialises arrays, not float16 scalars
    assert halved["conv.weight"].nbytes == params["conv.weight"].nbytes // 2
    assert set(sources) == {"conv.weight", "bn.running_var", "scalar"}

    restored = from_float16(halved, sources)
    assert restored["conv.weight"].dtype == np.float32 and restored["scalar"].dtype == np.float64
    np.testing.assert_allclose(restored["conv.weight"], params["conv.weight"], rtol=1e-3, atol=1e-3)
    assert restored["bn.running_var"][0] == np.finfo(np.float16).max


def test_torch_tensors_round_trip() -> None:
    params = {"w": torch.linspace(-1, 1, 5), "n": torch.tensor(3)}
    halved, sources = to_float16(params)
    assert halved["w"].dtype == torch.float16 and halved["n"].dtype == torch.int64
    restored = from_float16(halved, sources)
    assert restored["w"].dtype == torch.float32
    torch.testing.assert_close(restored["w"], params["w"], rtol=1e-3, atol=1e-3)


def test_the_filters_quantise_a_shareable_and_restore_it() -> None:
    shareable = DXO(data_kind=DataKind.WEIGHTS, data=_params()).to_shareable()
    sent = Float16Quantizer().process(shareable, FLContext())
    assert from_shareable(sent).data["conv.weight"].dtype == np.float16

    arrived = from_shareable(Float16Dequantizer().process(sent, FLContext()))
    assert arrived.data["conv.weight"].dtype == np.float32
    assert arrived.get_meta_prop("dose3d_float16_source_dtypes") is None
    assert "Float16Quantizer" in arrived.get_filter_history()


def test_the_filter_history_lists_each_filter_once() -> None:
    """NVFlare's DXOFilter copies the history into the new DXO: a copied meta must not bring it twice."""
    original = DXO(data_kind=DataKind.WEIGHTS, data=_params())
    original.add_filter_history(["WeightsOnlyGuard", "GaussianDP(C=1,sigma=1)"])
    sent = Float16Quantizer().process(original.to_shareable(), FLContext())
    arrived = from_shareable(Float16Dequantizer().process(sent, FLContext()))
    assert arrived.get_filter_history() == [
        "WeightsOnlyGuard",
        "GaussianDP(C=1,sigma=1)",
        "Float16Quantizer",
        "Float16Dequantizer",
    ]
    assert original.get_filter_history() == ["WeightsOnlyGuard", "GaussianDP(C=1,sigma=1)"]


def test_metrics_pass_unchanged() -> None:
    shareable = DXO(data_kind=DataKind.METRICS, data={"val_dice": 0.9}).to_shareable()
    assert from_shareable(Float16Quantizer().process(shareable, FLContext())).data == {"val_dice": 0.9}


def test_the_task_data_shared_by_several_sites_is_quantised_for_each() -> None:
    """The server filters the same global model once per site: the first filtering must not mark the
    original as done."""
    original = DXO(data_kind=DataKind.WEIGHTS, data=_params(), meta={"current_round": 1})
    for _ in range(3):
        sent = Float16Quantizer().process(original.to_shareable(), FLContext())
        assert from_shareable(sent).data["conv.weight"].dtype == np.float16
    assert original.data["conv.weight"].dtype == np.float32 and set(original.meta) == {"current_round"}
