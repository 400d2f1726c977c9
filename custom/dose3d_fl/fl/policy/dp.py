"""Site-enforced differential privacy: the Gaussian mechanism on the update a site releases, with an accountant.

**What is released.** In every ``train`` round a site releases one update ``u``: its local model minus the
global model it received for the round (``ReceivedModels``, remembered by this filter's data-side instance).
The filter clips ``u`` to L2 norm ``C`` and adds ``z ~ N(0, std^2 I)`` to every floating-point coordinate,
then sends it in the transfer type the job uses:

* FULL transfer (a ``WEIGHTS`` result: the local model): ``u = local - received global``; the site sends
  ``received global + clip(u) + z`` as full weights.
* DIFF transfer (a ``WEIGHT_DIFF`` result: NVFlare's Client API already sent ``local - received global``): the
  result *is* ``u``; the site sends ``clip(u) + z`` as a difference.

Either way the server learns ``clip(u) + z`` and nothing else of the weights. Integer buffers (BatchNorm
batch counters) are sent unchanged from the received model (FULL) or as a zero difference (DIFF). The filter
sees the float32 model: it runs in the site's scope, before any job filter such as float16 quantisation
(``dose3d_fl.fl.policy.quantization``), which is post-processing of the released value.

**Neighbouring data sets, sensitivity, noise.** The privacy unit is the site's whole local data set (site-level
DP: the federated counterpart of user-level DP, McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models", ICLR, with the site as the user). Adjacency is *replace-one* (substitution): two data sets
``D`` and ``D'`` of the site are neighbours whatever their difference, one patient changed or all of them.
Because every clipped update has norm at most ``C``, the L2 sensitivity of the release (Dwork & Roth 2014, "The
Algorithmic Foundations of Differential Privacy", Def. 3.8) is

    Delta = max ||clip(u(D)) - clip(u(D'))||_2 = 2 C.

(Under add/remove adjacency, the site's data against none, with "none" sending a zero update, it would be
``C``; this module does not use that.) The noise standard deviation is ``std = sigma * Delta = 2 sigma C``
(:func:`noise_std`). Per round this is the Gaussian mechanism with noise multiplier ``std / Delta = sigma``:
Renyi-DP ``alpha / (2 sigma^2)`` at every order ``alpha`` (Mironov 2017, "Renyi Differential Privacy",
Prop. 7), which is what opacus's ``RDPAccountant`` computes for sample rate 1 (every site takes part in every
round, no sampling). The accountant composes the rounds and converts to ``(epsilon, delta)``. The guarantee
holds for any pair of the site's data sets, so for one patient in particular.

**The ledger and the halt.** The ledger (a site-local JSON file) records every release, across jobs, because
all of them are computed from the same data: a new job continues from what earlier jobs spent. Before each
release the filter computes the epsilon that *this* release would bring the site to; if that exceeds the
site's budget it sends an error instead (no release, nothing recorded) and says so in its log, and it keeps
refusing in later rounds. The server aggregates the sites that answered (``min_responses``,
``dose3d_fl.fl.server.resilient``).

**Not covered:** the scalar metrics a site reports (Dice, loss, case count, timings: at most the job's
declared allow-list, ``dose3d_fl.fl.policy.metrics``) and ``NUM_STEPS_CURRENT_ROUND`` (the aggregation weight,
which follows the number of training cases); they are not noised. Cross-site evaluation's ``submit_model``
gets the last DP-released model (post-processing, no extra cost). The noise comes from numpy's PCG64
generator, not a cryptographic source, and floating-point attacks on Gaussian sampling are not addressed.

Noise can make a BatchNorm running variance negative; such values are raised to ``MIN_VARIANCE`` after the
noise (post-processing of a released value costs no privacy).
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
from nvflare.apis.dxo import DataKind, MetaKey, from_shareable
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
# Replace-one adjacency: two clipped updates differ by at most 2C (module docstring).
SENSITIVITY_PER_CLIP = 2.0


def sensitivity(clip_norm: float) -> float:
    """L2 sensitivity of one release under replace-one adjacency: ``2 C``."""
    return SENSITIVITY_PER_CLIP * clip_norm


def noise_std(clip_norm: float, noise_multiplier: float) -> float:
    """Standard deviation of the noise on each coordinate: ``sigma * sensitivity = 2 sigma C``."""
    return noise_multiplier * sensitivity(clip_norm)


@dataclass(frozen=True)
class Release:
    """One noised update released by a site.

    ``noise_std`` is the standard deviation actually added; the accountant charges the release at
    ``noise_std / sensitivity(clip_norm)``. A release recorded without it (a ledger written before the
    sensitivity was stated as ``2C``) had ``sigma * C`` of noise and is charged at ``sigma / 2``.
    """

    job_id: str
    round: int | None
    noise_multiplier: float
    clip_norm: float
    update_norm: float
    time: float
    noise_std: float | None = None
    transfer: str = ""

    @property
    def accounted_multiplier(self) -> float:
        """The noise multiplier the accountant charges: noise standard deviation over sensitivity."""
        std = self.noise_std if self.noise_std is not None else self.noise_multiplier * self.clip_norm
        return std / sensitivity(self.clip_norm)


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
        """Epsilon of all releases (plus one more at noise multiplier ``extra_noise_multiplier``) at ``delta``."""
        sigmas = [r.accounted_multiplier for r in self.releases]
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
    """The Gaussian mechanism on one update: scale to L2 norm at most ``C``, add ``N(0, (2 sigma C)^2)``.

    Args:
        update: tensor name -> float64 update (local minus received global).
        clip_norm: ``C``.
        noise_multiplier: ``sigma``; the standard deviation is ``sigma * sensitivity(C)`` (:func:`noise_std`).
        rng: the noise source.

    Returns:
        The noised update and the update's norm before clipping.
    """
    norm = float(np.sqrt(sum(float(np.sum(np.square(d))) for d in update.values())))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    std = noise_std(clip_norm, noise_multiplier)
    noised = {name: d * scale + rng.normal(0.0, std, size=d.shape) for name, d in update.items()}
    return noised, norm


@dataclass
class PrivateUpdate:
    """What :func:`privatize` makes of one result.

    Attributes:
        sent: the tensors to send, in the result's own transfer type and dtypes.
        model: the full model the server can reconstruct (received global + noised update), for
            ``submit_model``.
        norm: the update's L2 norm before clipping.
    """

    sent: dict[str, Any]
    model: dict[str, Any]
    norm: float


def privatize(
    result: dict[str, Any],
    received: dict[str, np.ndarray],
    difference: bool,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> PrivateUpdate:
    """Clip and noise the update that a train result releases, and send it back in the result's transfer type.

    Args:
        result: the tensors the client script sent: the local model (FULL) or its difference from the received
            global model (DIFF).
        received: the global model the site received for the round (any float dtype, e.g. float16 when the job
            quantises its transfers; integer buffers as received).
        difference: ``True`` for a ``WEIGHT_DIFF`` result.
        clip_norm: ``C``.
        noise_multiplier: ``sigma``.
        rng: the noise source.

    Raises:
        ValueError: a tensor that is not in the received model, or an update that is not finite (nothing is
            released then).
    """
    update: dict[str, np.ndarray] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in result.items():
        array, base = as_array(value), received.get(name)
        if base is None or array is None:
            raise ValueError(f"tensor {name!r} is not in the received model")
        arrays[name] = array
        if array.dtype.kind == "f":
            local = array.astype(np.float64)
            update[name] = local if difference else local - base.astype(np.float64)
    noised, norm = clip_and_noise(update, clip_norm, noise_multiplier, rng)
    if not np.isfinite(norm):
        raise ValueError("the update is not finite (NaN or Inf)")
    sent, model = {}, {}
    for name, value in result.items():
        array, base = arrays[name], received[name]
        if name in noised:
            delta = noised[name]
            if name.endswith(VARIANCE_SUFFIX):  # post-processing (no privacy cost): a variance stays positive
                delta = np.maximum(delta, MIN_VARIANCE - base.astype(np.float64))
            full = (base.astype(np.float64) + delta).astype(array.dtype)
            sent[name] = like(value, (delta if difference else full).astype(array.dtype))
            model[name] = like(value, full)
        else:  # integer buffers: as received (FULL) or no change (DIFF)
            same = np.asarray(base).astype(array.dtype)
            sent[name] = like(value, np.zeros_like(array) if difference else same)
            model[name] = like(value, same)
    return PrivateUpdate(sent, model, norm)


class GaussianDP(Filter):
    """Site filter: clip each released update to ``clip_norm``, add Gaussian noise, account, stop at the budget.

    List it in the site's scope after the weights-only guard (``dose3d_fl.fl.policy.privacy``), in both filter
    lists: the data-side instance remembers the received global model, the result-side one releases.

    Args:
        clip_norm: ``C``, the L2 norm bound of a site's update.
        noise_multiplier: ``sigma``; the noise standard deviation is ``sigma * 2C`` (sensitivity ``2C``, module
            docstring) and the accountant's noise multiplier is ``sigma``.
        epsilon_budget: the site's total epsilon; no release may take it beyond.
        delta: the ``delta`` of the guarantee.
        ledger: the ledger file, relative to the site's workspace root unless absolute; ``{site}`` is replaced
            by the site's name (one configuration for several simulated sites).
        seed: fixes the noise (for experiments only; ``None`` draws it from the operating system). The site's
            name is mixed in, so sites that share one configuration (the simulator) draw different noise.
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
        self._rng: np.random.Generator | None = None
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
            dxo.data_kind = DataKind.WEIGHTS  # the full released model (post-processing of the releases)
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
        difference = dxo.data_kind == DataKind.WEIGHT_DIFF
        if self._rng is None:
            site_entropy = list(site_of(fl_ctx).encode())
            self._rng = np.random.default_rng(None if self.seed is None else [self.seed, *site_entropy])
        try:
            private = privatize(
                dxo.data, received.params, difference, self.clip_norm, self.noise_multiplier, self._rng
            )
        except ValueError as err:
            return refuse(fl_ctx, "differential privacy", str(err))
        dxo.data = private.sent
        round_ = shareable.get_header("current_round")
        std = noise_std(self.clip_norm, self.noise_multiplier)
        transfer = "diff" if difference else "full"
        ledger.record(
            Release(
                job,
                round_,
                self.noise_multiplier,
                self.clip_norm,
                round(private.norm, 6),
                round(time.time(), 3),
                noise_std=std,
                transfer=transfer,
            )
        )
        epsilon = ledger.epsilon(self.delta)
        metrics = dict(dxo.get_meta_prop(MetaKey.INITIAL_METRICS) or {})
        metrics["dp_epsilon"] = epsilon
        dxo.set_meta_prop(MetaKey.INITIAL_METRICS, metrics)
        dxo.set_meta_prop("dp_epsilon", epsilon)
        dxo.set_meta_prop("dp_delta", self.delta)
        dxo.add_filter_history(f"GaussianDP(C={self.clip_norm:g},sigma={self.noise_multiplier:g})")
        self._released[job] = private.model
        logger.info(
            "%s: DP release %d (round %s, %s transfer): update norm %.4g clipped to %g, noise std %.3g "
            "(sigma %g x sensitivity 2C); epsilon %.3g of %g (delta %g)",
            site_of(fl_ctx),
            len(ledger.releases),
            round_,
            transfer,
            private.norm,
            self.clip_norm,
            std,
            self.noise_multiplier,
            epsilon,
            self.epsilon_budget,
            self.delta,
        )
        return dxo.update_shareable(shareable)

    def _resolve(self, fl_ctx: FLContext) -> Path:
        path = Path(self.ledger.replace("{site}", site_of(fl_ctx)))
        if path.is_absolute():
            return path
        return Path(fl_ctx.get_engine().get_workspace().get_root_dir()) / path
