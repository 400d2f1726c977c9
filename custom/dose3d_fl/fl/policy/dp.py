"""Site-enforced differential privacy: the Gaussian mechanism on each model update, with an accountant.

What it protects: the site's **whole contribution** in a round. The update a site sends (its weights minus
the global model it received) is clipped to L2 norm ``C`` and Gaussian noise ``N(0, (sigma * C)^2)`` is
added to every coordinate, so any change to the site's data (one patient, or all of them) moves what the
server sees by at most ``C`` before noise. Every site takes part in every round (sampling rate 1), so the
rounds compose; opacus's RDP accountant turns the sequence of noise multipliers into ``(epsilon, delta)``.

The ledger (a site-local JSON file) keeps every release across jobs, because all of them are computed from
the same data: a new job continues from what earlier jobs spent. When the next release would exceed the
site's budget, the site refuses to send it (the server sees an error for that site and aggregates the
rest) and says so in its log; it keeps refusing in later rounds.

Noise can make a BatchNorm running variance negative; such values are raised to ``MIN_VARIANCE`` after the
noise (post-processing of a released value costs no privacy).

Not covered: the scalar metrics a site reports (Dice, loss, number of cases). They are not noised.
Cross-site evaluation's ``submit_model`` gets the last DP-released weights (post-processing, no extra cost).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.dxo import MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_constant import FilterKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from opacus.accountants import RDPAccountant

from dose3d_fl.files import write_json_atomic
from dose3d_fl.fl.policy.filters import (
    ReceivedModels,
    direction,
    job_id_of,
    refuse,
    remember_incoming,
    site_of,
    task_of,
)
from dose3d_fl.fl.policy.payload import WEIGHT_KINDS, as_array, like

logger = logging.getLogger("dose3d.site_policy")
# RDP orders searched for the tightest epsilon: opacus's defaults plus orders close to 1, which small noise
# multipliers need (opacus warns when the best order is the smallest one searched).
RDP_ORDERS = sorted({1.0 + x / 100 for x in range(1, 100)} | set(RDPAccountant.DEFAULT_ALPHAS))
# BatchNorm running variances: noise may push them below zero, which turns the network's output into NaN.
VARIANCE_SUFFIX = "running_var"
MIN_VARIANCE = 1e-3


@dataclass(frozen=True)
class Release:
    """One noised update released by a site."""

    job_id: str
    round: int | None
    noise_multiplier: float
    clip_norm: float
    update_norm: float
    time: float


class PrivacyLedger:
    """Every release a site made, in a JSON file, and the ``(epsilon, delta)`` they spend together.

    Args:
        path: the ledger file (created on first release).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.releases: list[Release] = []
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            self.releases = [Release(**r) for r in data.get("releases", [])]

    def epsilon(self, delta: float, extra_noise_multiplier: float | None = None) -> float:
        """Epsilon of all releases (plus one more with ``extra_noise_multiplier`` when given) at ``delta``."""
        sigmas = [r.noise_multiplier for r in self.releases]
        if extra_noise_multiplier is not None:
            sigmas.append(extra_noise_multiplier)
        if not sigmas:
            return 0.0
        accountant = RDPAccountant()
        accountant.history = _history(sigmas)
        with (
            warnings.catch_warnings()
        ):  # "optimal order is the smallest alpha": only at tiny sigma, huge epsilon
            warnings.simplefilter("ignore", UserWarning)
            return float(accountant.get_epsilon(delta, alphas=RDP_ORDERS))

    def record(self, release: Release) -> None:
        """Append a release and write the file atomically."""
        self.releases.append(release)
        write_json_atomic(self.path, {"releases": [r.__dict__ for r in self.releases]}, indent=1)


def _history(sigmas: list[float]) -> list[tuple[float, float, int]]:
    """opacus accountant history: runs of equal noise multipliers as (sigma, sample_rate=1, steps)."""
    history: list[tuple[float, float, int]] = []
    for sigma in sigmas:
        if history and history[-1][0] == sigma:
            history[-1] = (sigma, 1.0, history[-1][2] + 1)
        else:
            history.append((sigma, 1.0, 1))
    return history


def clip_and_noise(
    update: dict[str, np.ndarray], clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], float]:
    """The Gaussian mechanism on one update: scale to L2 norm at most ``clip_norm``, add N(0, (sigma*C)^2).

    Args:
        update: tensor name -> float64 difference (local minus received global).
        clip_norm: ``C``.
        noise_multiplier: ``sigma``.
        rng: the noise source.

    Returns:
        The noised update and the update's norm before clipping.
    """
    norm = float(np.sqrt(sum(float(np.sum(np.square(d))) for d in update.values())))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    std = noise_multiplier * clip_norm
    noised = {name: d * scale + rng.normal(0.0, std, size=d.shape) for name, d in update.items()}
    return noised, norm


class GaussianDP(Filter):
    """Site filter: clip each update to ``clip_norm``, add Gaussian noise, account, stop at the budget.

    List it in the site's scope after the weights-only guard (``dose3d_fl.fl.policy.privacy``).

    Args:
        clip_norm: ``C``, the L2 norm bound of a site's update.
        noise_multiplier: ``sigma``; the noise standard deviation is ``sigma * C``.
        epsilon_budget: the site's total epsilon; no release may take it beyond.
        delta: the ``delta`` of the guarantee.
        ledger: the ledger file, relative to the site's workspace root unless absolute.
        seed: fixes the noise (for experiments only; ``None`` draws it from the operating system).
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        epsilon_budget: float,
        delta: float = 1e-5,
        ledger: str = "local/dp_ledger.json",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if clip_norm <= 0 or noise_multiplier <= 0 or epsilon_budget <= 0 or not 0 < delta < 1:
            raise ValueError(
                "GaussianDP needs clip_norm > 0, noise_multiplier > 0, epsilon_budget > 0 and 0 < delta < 1 "
                f"(got {clip_norm}, {noise_multiplier}, {epsilon_budget}, {delta}); fix the site's privacy.json"
            )
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.epsilon_budget = float(epsilon_budget)
        self.delta = float(delta)
        self.ledger = ledger
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._released: dict[str, dict[str, Any]] = {}

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        if direction(fl_ctx) == FilterKey.IN:
            remember_incoming(shareable, fl_ctx)
            return shareable
        try:
            dxo = from_shareable(shareable)
        except ValueError:
            return shareable  # no DXO: an error reply or an empty result, nothing to protect
        if dxo.data_kind not in WEIGHT_KINDS:
            return shareable
        job = job_id_of(fl_ctx)
        if task_of(fl_ctx) != "train":
            released = self._released.get(job)
            if released is None:
                return refuse(fl_ctx, "differential privacy", "no DP-released model of this job to share yet")
            dxo.data = dict(released)
            return dxo.update_shareable(shareable)

        received = ReceivedModels.get(job)
        if received is None or not received.params:
            return refuse(
                fl_ctx, "differential privacy", "no received global model to compute the update from"
            )
        ledger = PrivacyLedger(self._resolve(fl_ctx))
        spent = ledger.epsilon(self.delta)
        next_epsilon = ledger.epsilon(self.delta, extra_noise_multiplier=self.noise_multiplier)
        if next_epsilon > self.epsilon_budget:
            return refuse(
                fl_ctx,
                "differential privacy",
                f"privacy budget reached: {len(ledger.releases)} release(s) spent epsilon {spent:.3g}; one more "
                f"would spend {next_epsilon:.3g} > budget {self.epsilon_budget:g} (delta {self.delta:g}); this "
                "site sends no more updates (raise epsilon_budget in local/privacy.json only with your "
                "ethics board's approval)",
            )

        floats, kept = {}, {}
        for name, value in dxo.data.items():
            array, base = as_array(value), received.params.get(name)
            if base is None or array is None:
                return refuse(fl_ctx, "differential privacy", f"tensor {name!r} is not in the received model")
            if array.dtype.kind == "f":
                floats[name] = array.astype(np.float64) - base.astype(np.float64)
            else:
                kept[name] = base  # integer buffers (BatchNorm batch counters): send back what was received
        noised, norm = clip_and_noise(floats, self.clip_norm, self.noise_multiplier, self._rng)
        out = {}
        for name, value in dxo.data.items():
            base = received.params[name]
            new = (
                (base.astype(np.float64) + noised[name]).astype(base.dtype) if name in noised else kept[name]
            )
            if name.endswith(VARIANCE_SUFFIX):  # post-processing (no privacy cost): a variance stays positive
                new = np.maximum(new, MIN_VARIANCE).astype(new.dtype)
            out[name] = like(value, new)
        dxo.data = out
        round_ = shareable.get_header("current_round")
        ledger.record(
            Release(job, round_, self.noise_multiplier, self.clip_norm, round(norm, 6), round(time.time(), 3))
        )
        epsilon = ledger.epsilon(self.delta)
        metrics = dict(dxo.get_meta_prop(MetaKey.INITIAL_METRICS) or {})
        metrics["dp_epsilon"] = epsilon
        dxo.set_meta_prop(MetaKey.INITIAL_METRICS, metrics)
        dxo.set_meta_prop("dp_epsilon", epsilon)
        dxo.set_meta_prop("dp_delta", self.delta)
        dxo.add_filter_history(f"GaussianDP(C={self.clip_norm:g},sigma={self.noise_multiplier:g})")
        self._released[job] = dict(out)
        logger.info(
            "%s: DP release %d (round %s): update norm %.4g clipped to %g, sigma %g; epsilon %.3g of %g (delta %g)",
            site_of(fl_ctx),
            len(ledger.releases),
            round_,
            norm,
            self.clip_norm,
            self.noise_multiplier,
            epsilon,
            self.epsilon_budget,
            self.delta,
        )
        return dxo.update_shareable(shareable)

    def _resolve(self, fl_ctx: FLContext) -> Path:
        path = Path(self.ledger)
        if path.is_absolute():
            return path
        return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / path
