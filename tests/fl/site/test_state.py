"""A site's local state survives a restart, and a cache that changes under a running job is noticed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.site.state import SiteState, cache_signature
from dose3d_fl.seg.trainer import SegTrainer
from tests.seg.cases import TINY_PROFILE, write_case


def test_restarted_site_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    train = [write_case(tmp_path / "cache", f"t{i}", seed=i) for i in range(4)]
    val = [write_case(tmp_path / "cache", "v0", seed=50)]
    state = SiteState(tmp_path / "state", "tiny")
    uninterrupted = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    losses = []
    for current_round in range(3):
        losses.append(uninterrupted.train_epochs(1)["loss"])
        state.save(uninterrupted, current_round)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["tiny.round1.pt", "tiny.round2.pt"]

    # The site crashed after round 1 (its round-2 state may exist too): a new process restores round 1.
    restarted = SegTrainer(train, val, TINY_PROFILE, num_threads=1)
    assert not state.restore(restarted, next_round=5)  # no state of round 4: left alone
    assert state.restore(restarted, next_round=2)
    assert restarted.epochs_done == 2
    assert not state.restore(restarted, next_round=2)  # a trainer that has state of its own is left alone

    # Its next local round equals the uninterrupted one: same crops, same optimiser moments.
    assert restarted.train_epochs(1)["loss"] == pytest.approx(losses[2], abs=1e-6)
    weights = zip(uninterrupted.get_weights().values(), restarted.get_weights().values(), strict=True)
    assert all(torch.allclose(a.float(), b.float(), atol=1e-6) for a, b in weights)


def test_cache_signature_changes_when_a_case_file_goes(tmp_path: Path) -> None:
    cases = [write_case(tmp_path, f"c{i}", seed=i) for i in range(2)]
    signature = cache_signature(cases)
    assert cache_signature(cases) == signature
    Path(cases[1]["label"]).unlink()
    assert cache_signature(cases) != signature
