"""The site's client script: FedProx's proximal term when the server asks for it."""

from __future__ import annotations

import torch
from nvflare.app_common.abstract.fl_model import FLModel

from dose3d_fl.fl.seg_client import fedprox_term


def test_no_fedprox_mu_no_term() -> None:
    assert fedprox_term(FLModel(params={}, meta={}), torch.nn.Linear(2, 2)) is None


def test_the_term_is_zero_at_the_global_model_and_grows_away_from_it() -> None:
    model = torch.nn.Linear(3, 2)
    term = fedprox_term(FLModel(params={}, meta={"fedprox_mu": 0.5}), model)
    assert term is not None
    assert float(term(model)) == 0.0
    with torch.no_grad():
        model.weight += 1.0  # 6 weights moved by 1: mu / 2 * 6 = 1.5
    value = term(model)
    assert float(value) == 1.5
    value.backward()
    assert model.weight.grad is not None  # the term trains the local model, not the frozen reference
