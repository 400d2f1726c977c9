"""The local GAN trainer (WGAN-GP): plain MONAI/torch, used unchanged by the federated client and by a
local or pooled run. It knows nothing of NVFlare.

Objective (Gulrajani et al. 2017): the critic maximises ``D(real) - D(fake)`` with a gradient penalty
``gp_weight * (||grad D(x_hat)|| - 1)^2`` on random interpolates; the generator maximises ``D(fake)``.
``critic_steps`` critic updates precede each generator update. Each network has its own Adam optimiser,
kept across rounds in the site's process; in ``generator-only`` aggregation the critic never leaves the
site.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dose3d_fl import __version__
from dose3d_fl.data.cases import Case
from dose3d_fl.gan.checkpoint import GanCheckpoint, save_gan_checkpoint
from dose3d_fl.gan.crops import CropSampler, load_organ_volumes, reference_crops
from dose3d_fl.gan.metrics import MemorizationFilter, quality_metrics
from dose3d_fl.gan.network import GENERATOR_PREFIX, build_gan
from dose3d_fl.gan.profiles import GanProfile, get_gan_profile

log = logging.getLogger(__name__)


class GanTrainer:
    """Trains the paired GAN on a site's training cases and measures its samples against them.

    Args:
        train_cases: dicts with absolute ``image`` and ``label`` NIfTI paths (the site's training split).
        profile: the GAN profile (default ``cpu-small``).
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when available.
        num_threads: ``torch.set_num_threads`` value (CPU); ``None`` leaves torch's setting alone.

    Raises:
        ValueError: no training case holds the organ.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        profile: GanProfile | None = None,
        *,
        device: str | torch.device | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.profile = profile or get_gan_profile()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.volumes = load_organ_volumes(train_cases, self.profile)
        self.sampler = CropSampler(self.volumes, self.profile, seed=self.profile.seed)
        self.reference = reference_crops(self.volumes, self.profile)
        self.memorization = MemorizationFilter(self.reference, self.profile.memorization_threshold)
        self.model = build_gan(self.profile).to(self.device)
        p = self.profile
        self.opt_g = torch.optim.Adam(self.model.generator.parameters(), lr=p.lr_generator, betas=p.betas)
        self.opt_d = torch.optim.Adam(
            self.model.discriminator.parameters(), lr=p.lr_discriminator, betas=p.betas
        )
        self.noise = torch.Generator(device="cpu").manual_seed(p.seed)
        self.steps_done = 0
        log.info(
            "GAN trainer: %d case(s) with the organ, %d reference crops",
            len(self.volumes),
            len(self.reference),
        )

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.profile.latent_dim, generator=self.noise).to(self.device)

    def _gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(real.shape[0], 1, 1, 1, 1, generator=self.noise).to(self.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.model.discriminator(mixed).sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def train_step(self) -> dict[str, float]:
        """``critic_steps`` critic updates then one generator update; returns the last losses.

        Returns:
            ``loss_d`` (critic loss with penalty), ``loss_g`` (generator loss), ``wasserstein`` (the critic's
            estimate ``D(real) - D(fake)``).
        """
        p, critic, generator = self.profile, self.model.discriminator, self.model.generator
        self.model.train()
        for _ in range(p.critic_steps):
            real = self.sampler.sample(p.batch_size).to(self.device)
            with torch.no_grad():
                fake = generator(self._noise(p.batch_size))
            self.opt_d.zero_grad(set_to_none=True)
            distance = critic(real).mean() - critic(fake).mean()
            loss_d = -distance + p.gp_weight * self._gradient_penalty(real, fake)
            loss_d.backward()
            self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        for param in critic.parameters():  # no critic gradients in the generator step
            param.requires_grad_(False)
        loss_g = -critic(generator(self._noise(p.batch_size))).mean()
        loss_g.backward()
        for param in critic.parameters():
            param.requires_grad_(True)
        self.opt_g.step()
        self.steps_done += 1
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "wasserstein": distance.item()}

    def train_epochs(self, epochs: int = 1) -> dict[str, float | int]:
        """Train ``epochs x steps_per_epoch`` generator steps.

        Returns:
            mean ``loss_d``, ``loss_g`` and ``wasserstein`` over this call, ``steps`` (generator steps, the
            FedAvg weight) and ``seconds``.
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        start = time.perf_counter()
        history = [self.train_step() for _ in range(epochs * self.profile.steps_per_epoch)]
        means = {
            key: float(sum(h[key] for h in history) / len(history)) if history else math.nan
            for key in ("loss_d", "loss_g", "wasserstein")
        }
        seconds = time.perf_counter() - start
        log.info(
            "%d GAN step(s): critic loss %.4f, generator loss %.4f, W-distance %.4f, %.1f s",
            len(history),
            means["loss_d"],
            means["loss_g"],
            means["wasserstein"],
            seconds,
        )
        return {**means, "steps": len(history), "seconds": seconds}

    @torch.no_grad()
    def generate(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` synthetic pairs ``(n, 2, S, S, S)`` on the CPU; a ``seed`` makes the draw reproducible."""
        self.model.eval()
        generator = torch.Generator().manual_seed(seed) if seed is not None else self.noise
        noise = torch.randn(n, self.profile.latent_dim, generator=generator).to(self.device)
        return self.model.generator(noise).cpu()

    def evaluate(self) -> dict[str, float]:
        """Quality metrics of ``metric_samples`` fixed-noise samples against this site's training crops."""
        samples = self.generate(self.profile.metric_samples, seed=self.profile.seed + 12345)
        return quality_metrics(samples, self.reference, self.profile, self.memorization)

    def evaluate_weights(self, weights: dict[str, Any]) -> dict[str, float]:
        """``evaluate`` for other weights (another site's or a global generator); this trainer's own weights
        are restored afterwards."""
        own = self.get_weights()
        self.set_weights(weights)
        try:
            return self.evaluate()
        finally:
            self.model.load_state_dict(own)

    # -- weights -------------------------------------------------------------------------------------------

    def get_weights(self, generator_only: bool = False) -> dict[str, torch.Tensor]:
        """A CPU copy of the state dict, or of its ``generator.*`` entries."""
        return {
            name: tensor.detach().cpu().clone()
            for name, tensor in self.model.state_dict().items()
            if not generator_only or name.startswith(GENERATOR_PREFIX)
        }

    def set_weights(self, weights: dict[str, Any]) -> None:
        """Load received weights: all of ``GanPair``'s, or only its ``generator.*`` ones (the critic stays).

        Raises:
            ValueError: a name that is not a tensor of this model, or generator tensors missing.
        """
        own = self.model.state_dict()
        unknown = sorted(set(weights) - set(own))
        missing = sorted(name for name in own if name.startswith(GENERATOR_PREFIX) and name not in weights)
        if unknown or missing:
            raise ValueError(
                f"received weights do not fit GAN profile {self.profile.name!r}: unknown {unknown[:3]}, "
                f"missing {missing[:3]}; check that the job and the site use the same GAN profile"
            )
        self.model.load_state_dict(
            {name: torch.as_tensor(value) for name, value in weights.items()}, strict=False
        )

    def save_checkpoint(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write ``{"model", "gan_profile", "meta"}`` (the whole pair)."""
        facts = {
            "steps": self.steps_done,
            "dose3d_fl": __version__,
            "torch": str(torch.__version__),
            **(meta or {}),
        }
        return save_gan_checkpoint(path, GanCheckpoint(self.get_weights(), self.profile, facts))
